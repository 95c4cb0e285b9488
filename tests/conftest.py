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
    from rearl.core.verify import VerifierPool

    p = VerifierPool(workers=2, timeout=3.0)
    yield p
    p.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, r1_tok):
    """A tiny random Qwen2 model with the real R1-distill tokenizer (fast unit tests)."""
    from _tiny import tiny_qwen2_dir

    return tiny_qwen2_dir(tmp_path_factory.mktemp("tiny-qwen2"), r1_tok, seed=0, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192)


@pytest.fixture(scope="session")
def quick_toy_cache(tmp_path_factory):
    """One cache directory for the quick toy LRM: the quick build (~4 min on one thread) is trained once
    per test session and shared by the tests that need it (its cache key is its configuration)."""
    return tmp_path_factory.mktemp("quick-toy-cache")
