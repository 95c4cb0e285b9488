"""`rearl measure`: overthinking statistics of trace files, checked by hand and on real traces."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rearl.core.text import ThinkTags
from rearl.eval.overthinking import MeasureConfig, measure, measure_trace


def test_one_trace_by_hand(r1_tok, pool):
    first = "Compute 6 times 7. Six sevens make 42, so the answer is 42.\n\n"
    rest = ("Wait, seven sixes are 42 as well, and I am sure of that after writing it all out.\n\n"
            "Let me check it once more by adding six to itself seven times in a row: 42.\n\n")
    text = "<think>\n" + first + rest + "</think>\n\n\\boxed{42}"
    r = measure_trace(r1_tok, text, "42", tags=ThinkTags.from_tokenizer(r1_tok), pool=pool)
    assert 0.5 < r["removable_share"] < 0.8  # everything from the first "42" on
    assert r["reflections_after"] == 2 and r["density_before"] == 0.0  # wait, check: both after it
    assert r["density_after"] > 0
    r = measure_trace(r1_tok, "<think>\nI need to think.\n</think>\n\n\\boxed{42}", "42",
                      tags=ThinkTags.from_tokenizer(r1_tok), pool=pool)
    assert r["removable_share"] == 0.0 and r["reflections_after"] == 0  # the answer only after the thinking


def test_real_traces_match_the_published_measurement(shared, tmp_path):
    """R1-14B on MATH500 (8 traces): median removable share 0.47, ~39 paragraphs (docs/testbed.md)."""
    out = tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "rearl.cli", "measure", "--quiet",
                        "--input", str(shared / "data/traces/r1_distill_qwen14b_math500_sentences.jsonl"),
                        "--tokenizer", str(shared / "models/deepseek-r1-distill-qwen-tokenizer"), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "removable share" in r.stdout
    res = json.loads(out.read_text())
    (f,) = res["files"].values()
    a = f["all"]
    assert a["traces"] == 8 and a["correct"] == 7
    assert a["removable_share"]["median"] == pytest.approx(0.47, abs=0.02)
    assert 30 <= a["paragraphs"]["median"] <= 45
    assert set(f["by_level"]) == {"3", "4", "5"}


def test_traces_without_gold_are_refused(tmp_path, r1_tok):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"problem": "1+1", "response": "<think>2</think>\\boxed{2}"}) + "\n")
    with pytest.raises(ValueError, match="gold"):
        measure(MeasureConfig(input=[str(p)], tokenizer=r1_tok.name_or_path), progress=False)
