"""Cheap string normalisation of answers, tried before the symbolic check."""

from __future__ import annotations

import re

_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "$")


def normalize_answer(s: str) -> str:
    a = s.strip()
    for d in _DROP:
        a = a.replace(d, "")
    a = a.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    a = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", a)
    a = re.sub(r"\s+", "", a)
    a = a.rstrip(".")
    if re.fullmatch(r"-?\d+\.0+", a):
        a = a.split(".")[0]
    return a


_INT = re.compile(r"[-+]?\d+")


def quick_compare(gold: str, pred: str) -> bool | None:
    """Decide the easy cases without math-verify: equal after normalisation, or two different
    integers. None means "ask the verifier"."""
    g, p = normalize_answer(str(gold)), normalize_answer(str(pred))
    if g == p:
        return True
    if _INT.fullmatch(g) and _INT.fullmatch(p):
        return int(g) == int(p)
    return None
