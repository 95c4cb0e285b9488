import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("REARL_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")).resolve()
R1_TOKENIZER = SHARED / "models" / "deepseek-r1-distill-qwen-tokenizer"
TRACES = SHARED / "data" / "traces"
EVAL = SHARED / "data" / "eval"


def _need(p: Path) -> Path:
    if not p.exists():
        pytest.fail(f"{p} is missing: tests read real data from ../shared (set REARL_SHARED)")
    return p


@pytest.fixture(scope="session")
def shared() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def r1_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_need(R1_TOKENIZER)))


@pytest.fixture(scope="session")
def pool():
    from rearl.verify import VerifierPool

    p = VerifierPool(workers=2, timeout=3.0)
    yield p
    p.close()
