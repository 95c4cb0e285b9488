"""Answer equivalence agrees with math-verify on ordinary formats (bench/answer_formats.py has the full table)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from rearl.core.rewards import AccuracyReward

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from answer_formats import agreement, build_cases, reference  # noqa: E402

T = "<think>\nworking\n</think>\n\n"


@pytest.mark.parametrize("mode,completion,gold,want", [
    ("math_verify", T + "The answer is 7,425,000.", "7425000", 1.0),
    ("answer_part", T + "The answer is 7,425,000.", "7425000", 0.0),  # the paper's protocol: boxed only
    ("answer_part", T + "\\boxed{1}, \\boxed{2}", "1, 2", 1.0),  # several boxes are one answer (a set)
    ("answer_part", T + "\\boxed{(2, 2)} \\text{and} \\boxed{(6, 2)}", "(2, 2), (6, 2)", 1.0),
    ("math_verify", T + "\\boxed{(2, 2)} \\text{and} \\boxed{(6, 2)}", "(2, 2), (6, 2)", 1.0),
    ("answer_part", T + "\\boxed{\\frac{1}{2}}", "$\\frac{1}{2}$", 1.0),  # a gold written in LaTeX
    ("answer_part", T + "\\boxed{2,3}", "$2$,$3$", 1.0),  # several $...$ in one gold
    ("answer_part", T + "\\boxed{18.90}", "$\\$18.90$", 1.0),  # a currency sign in the gold
    ("last_boxed_anywhere", "maybe \\boxed{5}. Wait", "5", 1.0),  # the authors' mode, kept for comparison
    ("math_verify", "<think>\nmaybe \\boxed{5}. Wait", "5", 0.0),  # unfinished thinking has no answer
])
def test_formats(pool, mode, completion, gold, want):
    assert AccuracyReward(mode=mode, pool=pool)(completions=[completion], answer=[gold]) == [want]


def test_agreement_with_math_verify_on_real_gold_answers(shared, pool):
    logging.disable(logging.CRITICAL)
    cases = build_cases(per_benchmark=25)
    table = agreement(cases, reference(cases), workers=2)
    mv, ap = table["math_verify"], table["answer_part"]
    assert mv["all"] >= 99.5, mv  # measured 99.9 on 5,458 cases (150 golds per file)
    for f in ("unboxed", "thousands separators"):
        if f in mv:
            assert mv[f] >= 99.0, (f, mv)
    for f in ("boxed", "boxed, wrong", "gold in $...$", "gold boxed", "units", "thousands separators, boxed"):
        assert ap[f] >= 99.0, (f, ap)
    assert ap["unboxed"] < 5.0  # boxed-only extraction misses unboxed answers: why math_verify exists
