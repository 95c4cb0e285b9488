"""REA-RL group assembly and group policies (docs/method.md#the-training-step), as pure functions.

A TRL group of 2G rows holds G samples and their G revisions, interleaved:
original_1, revised_1, ..., original_G, revised_G. A revision that is wrong, unfinished, or could
not be made (reflection model failure) is handled by the configured policy:

* ``drop`` (the paper): the row stays but is marked, its rewards become NaN, so TRL leaves it out
  of the group mean/std and gives it zero advantage;
* ``duplicate_original`` (the authors' code): the row becomes a copy of its original.

``zero_advantage`` groups: where every scorable row has accuracy 0, the whole group is marked NaN
too (zero advantage for all; the authors set std to +inf for the same effect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class Sample:
    ids: list[int]
    finished: bool
    logprobs: list[float] | None = None


@dataclass
class RevisionOutcome:
    """What became of one sample's revision."""

    ids: list[int] | None  # kept prefix + scaffold + answer; None if no revision could be made
    sampled_mask: list[int] | None = None
    ok: bool = False  # correct and finished: the revision is accepted
    cut_paragraph: int | None = None
    error: str | None = None  # reflection-model failure
    logprobs: list[float] | None = None


@dataclass
class Rows:
    completion_ids: list[list[int]] = field(default_factory=list)
    env_mask: list[list[int]] = field(default_factory=list)
    logprobs: list[list[float]] | None = field(default_factory=list)
    is_revision: list[bool] = field(default_factory=list)
    pair_id: list[int] = field(default_factory=list)
    revision_failed: list[bool] = field(default_factory=list)  # rewards to be NaN'd (drop policy)
    revision_replaced: list[bool] = field(default_factory=list)  # a copy of the original (duplicate policy)
    cut_paragraph: list[int] = field(default_factory=list)  # -1 where none
    tokens_saved: list[int] = field(default_factory=list)


def interleave(originals: Sequence[Sample], revisions: Sequence[RevisionOutcome], policy: str = "drop",
               pair_offset: int = 0) -> Rows:
    """Rows [o_1, r_1, o_2, r_2, ...] for one or more groups, applying the failed-revision policy."""
    if len(originals) != len(revisions):
        raise ValueError(f"{len(originals)} originals but {len(revisions)} revisions")
    if policy not in ("drop", "duplicate_original"):
        raise ValueError(f"unknown failed-revision policy {policy!r}")
    rows = Rows()
    with_lp = all(o.logprobs is not None for o in originals)
    if not with_lp:
        rows.logprobs = None
    for j, (o, r) in enumerate(zip(originals, revisions)):
        pid = pair_offset + j
        rows.completion_ids.append(list(o.ids))
        rows.env_mask.append([1] * len(o.ids))
        if rows.logprobs is not None:
            rows.logprobs.append(list(o.logprobs))
        rows.is_revision.append(False)
        rows.pair_id.append(pid)
        rows.revision_failed.append(False)
        rows.revision_replaced.append(False)
        rows.cut_paragraph.append(-1)
        rows.tokens_saved.append(0)

        failed = not r.ok or r.ids is None
        copy = r.ids is None or (failed and policy == "duplicate_original")
        ids = list(o.ids) if copy else list(r.ids)
        rows.completion_ids.append(ids)
        rows.env_mask.append([1] * len(ids) if copy else list(r.sampled_mask or [1] * len(ids)))
        if rows.logprobs is not None:
            lp = o.logprobs if copy else (r.logprobs if r.logprobs is not None else [math.nan] * len(ids))
            rows.logprobs.append(list(lp))
        rows.is_revision.append(True)
        rows.pair_id.append(pid)
        rows.revision_failed.append(failed and policy == "drop")
        rows.revision_replaced.append(copy)
        rows.cut_paragraph.append(-1 if r.cut_paragraph is None else r.cut_paragraph)
        rows.tokens_saved.append(0 if copy or failed else len(o.ids) - len(ids))
    return rows


def apply_group_policies(
    rewards: list[list[float]], group_size: int, accuracy_col: int | None, dropped: Sequence[bool],
    zero_accuracy: str = "zero_advantage",
) -> list[list[float]]:
    """Rewards per row and reward function, with dropped rows and all-wrong groups set to NaN."""
    n = len(rewards)
    if n % group_size:
        raise ValueError(f"{n} rows do not form groups of {group_size}")
    out = [list(r) for r in rewards]
    nan_row = [math.nan] * (len(rewards[0]) if rewards else 0)
    for i in range(n):
        if dropped[i]:
            out[i] = list(nan_row)
    if zero_accuracy == "zero_advantage" and accuracy_col is not None:
        for g in range(0, n, group_size):
            acc = [out[i][accuracy_col] for i in range(g, g + group_size) if not math.isnan(out[i][accuracy_col])]
            if all(a <= 0 for a in acc):
                for i in range(g, g + group_size):
                    out[i] = list(nan_row)
    return out


def group_advantages(rewards: Sequence[float], group_size: int, eps: float = 1e-4) -> list[float]:
    """Reference for TRL's group normalisation: (r - nanmean) / (unbiased nanstd + eps); NaN -> 0."""
    adv = []
    for g in range(0, len(rewards), group_size):
        xs = [r for r in rewards[g : g + group_size] if not math.isnan(r)]
        m = sum(xs) / len(xs) if xs else math.nan
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        for r in rewards[g : g + group_size]:
            a = (r - m) / (sd + eps) if not (math.isnan(r) or math.isnan(sd)) else 0.0
            adv.append(a)
    return adv
