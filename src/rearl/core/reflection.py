"""Reflection counting, density and the calibrated threshold (docs/method.md#reflection-reward).

A "reflection" is one reflection keyword, or a chain of them where each next keyword starts within
0-59 characters of the end of the previous one, on one line. Two matchers:

* ``authors``: no word boundaries, as the authors' regex (matches "but" inside "distribute");
* ``word``: the same chaining with word boundaries (docs/method.md#where-we-differ-from-the-authors-code).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

KEYWORDS = ("wait", "alternatively", "check", "but")
REGEX_MODES = ("authors", "word")


def _build(words: Sequence[str], boundaries: bool) -> re.Pattern:
    alt = "|".join(re.escape(w) for w in words)
    kw = rf"\b(?:{alt})\b" if boundaries else rf"(?:{alt})"
    # `.` does not cross newlines, so chains stop at line breaks, as in the authors' regex.
    return re.compile(rf"{kw}(?:.{{0,59}}{kw})*", re.IGNORECASE)


_PATTERNS = {"authors": _build(KEYWORDS, False), "word": _build(KEYWORDS, True)}


def reflection_pattern(mode: str = "authors", keywords: Sequence[str] | None = None) -> re.Pattern:
    if mode not in REGEX_MODES:
        raise ValueError(f"unknown reflection regex mode {mode!r}; choose one of {REGEX_MODES}")
    if keywords is None:
        return _PATTERNS[mode]
    return _build(tuple(keywords), mode == "word")


def count_reflections(text: str, mode: str = "authors") -> int:
    """Number of reflection chains in `text`."""
    return sum(1 for _ in reflection_pattern(mode).finditer(text or ""))


def density(n_reflections: int, think_tokens: int) -> float:
    """Reflections per thinking token; 0 when there is no thinking."""
    return n_reflections / think_tokens if think_tokens > 0 else 0.0


def tokens_per_reflection(n_reflections: int, think_tokens: int) -> float:
    """The authors' per-response statistic: think tokens / max(1, reflections)."""
    return think_tokens / max(1, n_reflections)


@dataclass
class Calibration:
    """The reflection threshold T (tokens per reflection) and D_q = 1/T."""

    quantile: float
    threshold: float  # T: the (1-q) percentile of tokens-per-reflection
    density_quantile: float  # D_q = 1 / T
    n_responses: int = 0
    regex: str = "authors"
    tokenizer: str = ""
    percentiles: dict[str, float] = field(default_factory=dict)  # tokens per reflection at 10..90
    per_response: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str) -> "Calibration":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        missing = {"quantile", "threshold", "density_quantile"} - set(data)
        if missing:
            raise ValueError(f"{path}: not a rearl calibration file (missing {sorted(missing)})")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of an empty list")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def calibrate(
    responses: Iterable[tuple[str, int]],
    quantile: float = 0.2,
    regex: str = "authors",
    tokenizer_name: str = "",
    ids: Iterable[str] | None = None,
) -> Calibration:
    """T = the (1-q)*100th percentile of think-tokens per reflection over base-model responses.

    `responses` yields (thinking text, thinking token count). With q = 0.2 this is the 80th
    percentile, the reading of docs/method.md#reflection-reward under which the authors' T = 225.09 is D_0.2 = 1/T.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    rows = []
    id_iter = iter(ids) if ids is not None else None
    for k, (think, n_tok) in enumerate(responses):
        n_ref = count_reflections(think, regex)
        rows.append(
            {
                "id": next(id_iter) if id_iter is not None else k,
                "think_tokens": int(n_tok),
                "reflections": n_ref,
                "tokens_per_reflection": tokens_per_reflection(n_ref, n_tok),
                "density": density(n_ref, n_tok),
            }
        )
    if not rows:
        raise ValueError("no responses to calibrate on")
    tpr = [r["tokens_per_reflection"] for r in rows]
    t = percentile(tpr, 100.0 * (1.0 - quantile))
    return Calibration(
        quantile=quantile,
        threshold=t,
        density_quantile=1.0 / t if t > 0 else math.inf,
        n_responses=len(rows),
        regex=regex,
        tokenizer=tokenizer_name,
        percentiles={str(p): percentile(tpr, p) for p in (10, 20, 40, 50, 60, 80, 90)},
        per_response=rows,
    )
