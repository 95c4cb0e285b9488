"""Where to cut: the Strong / Normal / Weak positions of docs/method.md#cut-positions.

Input: P(Result) per paragraph (possibly fewer values than paragraphs) and the paragraph count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

POSITIONS = ("strong", "normal", "weak")


def cap_index(n: int) -> int:
    """The last paragraph a cut may keep: n - 1 - min(floor(0.05 (n + 10)), 5)."""
    return n - 1 - min(math.floor((n + 10) * 0.05), 5)


@dataclass(frozen=True)
class CutPositions:
    strong: int
    normal: int
    weak: int
    found: bool  # False when no paragraph qualified and Normal fell back to the cap

    def get(self, which: str) -> int:
        if which not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {which!r}")
        return getattr(self, which)


def cut_positions(
    p: Sequence[float],
    n: int | None = None,
    *,
    threshold: float = 0.5,
    strong_threshold: float = 0.25,
    second_half: bool = True,
) -> CutPositions | None:
    """Strong, Normal and Weak cut paragraphs (inclusive: paragraphs 0..pos are kept).

    Normal: first paragraph in the second half (index >= n/2) with p >= threshold, else the cap.
    Weak: after Normal's unbroken run of qualifying paragraphs, the next qualifying one (a "second
    answer"), else the run's last paragraph. Strong: the highest p >= strong_threshold among
    paragraphs 0..Normal (ties to the earlier), else Normal. All three are capped at `cap_index`.
    `second_half=False` lets every paragraph qualify for Normal/Weak.
    """
    n = len(p) if n is None else n
    if n <= 0:
        return None
    cap = cap_index(n)
    probs = [float(p[i]) if i < len(p) else 0.0 for i in range(n)]
    lo = n * 0.5 if second_half else 0

    def qualifies(i: int) -> bool:
        return i >= lo and probs[i] >= threshold

    normal = next((i for i in range(n) if qualifies(i)), None)
    found = normal is not None
    if normal is None:
        weak = cap
        scan_to = n - 1
    else:
        run_end = normal
        while run_end + 1 < n and qualifies(run_end + 1):
            run_end += 1
        weak = next((i for i in range(run_end + 1, n) if qualifies(i)), run_end)
        scan_to = normal
    strong = None
    for i in range(scan_to + 1):
        if probs[i] >= strong_threshold and (strong is None or probs[i] > probs[strong]):
            strong = i
    normal_pos = normal if normal is not None else cap
    if strong is None:
        strong = normal_pos
    return CutPositions(min(strong, cap), min(normal_pos, cap), min(weak, cap), found)
