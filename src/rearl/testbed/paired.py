"""Paired comparisons of methods evaluated on the same held-out tasks with the same sampling seeds.

Two methods sampled on the same tasks are not independent: a task that is hard for one is hard for
the other. The interval of a difference must come from the per-task differences (paired), not from
two independent binomial intervals, which overstate it when the methods agree on most tasks. Here:
the percentile bootstrap over tasks (Efron & Tibshirani 1993, ch. 13), resampling task indices with
replacement and recomputing the mean difference; several seeds are summarised as the mean of the
per-seed differences with the spread (min, max) beside it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence


@dataclass
class Paired:
    diff: float  # mean of (a - b) over the tasks both have
    lo: float  # 95% percentile-bootstrap interval of the mean difference
    hi: float
    n: int  # tasks compared

    def to_json(self) -> dict[str, Any]:
        return {"diff": self.diff, "ci95": [self.lo, self.hi], "n": self.n}


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Paired:
    """Mean of a[k] - b[k] over the keys both hold (tasks), with its bootstrap interval. Values are per-task
    outcomes (1/0 for accuracy, token counts, ...). Keys in only one side are an error: a paired comparison
    of different task sets would be silently wrong."""
    only = set(a) ^ set(b)
    if only:
        raise ValueError(f"paired comparison over different tasks: {len(only)} task(s) in only one side, "
                         f"e.g. {sorted(only)[:3]}")
    keys = sorted(a)
    if not keys:
        raise ValueError("paired comparison over no tasks")
    d = [float(a[k]) - float(b[k]) for k in keys]
    n = len(d)
    mean = sum(d) / n
    rng = random.Random(seed)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    lo = means[max(0, int(tail * resamples))]
    hi = means[min(resamples - 1, int((1 - tail) * resamples) - 1)]
    return Paired(mean, lo, hi, n)


def over_seeds(per_seed: Sequence[Paired]) -> dict[str, Any]:
    """The mean difference over seeds, its spread (min, max) and each seed's own interval."""
    if not per_seed:
        raise ValueError("no seeds")
    diffs = [p.diff for p in per_seed]
    return {"diff": sum(diffs) / len(diffs), "min": min(diffs), "max": max(diffs), "seeds": len(diffs),
            "per_seed": [p.to_json() for p in per_seed]}


def mean_spread(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean over seeds with (min, max); None when no seed has the value."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return {"mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs), "seeds": len(xs)}
