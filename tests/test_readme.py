"""The README's Python example runs, and uses only names that `rearl` itself exports."""

from __future__ import annotations

import re
from pathlib import Path

import rearl

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_example_uses_the_public_api(capsys):
    (code,) = _python_blocks()
    used = set(re.findall(r"\brearl\.(\w+)", code))
    assert used and used <= set(rearl.__all__), used - set(rearl.__all__)
    assert not re.search(r"^\s*from rearl", code, re.M)
    exec(compile(code, str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "[1.0]"
