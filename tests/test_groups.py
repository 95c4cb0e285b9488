import math

import pytest

from rearl.core.groups import (
    RevisionOutcome,
    Sample,
    apply_group_policies,
    group_advantages,
    interleave,
)

O = [Sample([1, 2, 3, 4, 5], True), Sample([6, 7, 8], True)]


def test_interleave_order_and_flags():
    revs = [RevisionOutcome([1, 2, 9, 10], [1, 1, 0, 1], ok=True, cut_paragraph=3), RevisionOutcome([6, 9, 11], [1, 0, 1], ok=False)]
    r = interleave(O, revs, "drop", pair_offset=10)
    assert r.completion_ids == [[1, 2, 3, 4, 5], [1, 2, 9, 10], [6, 7, 8], [6, 9, 11]]
    assert r.is_revision == [False, True, False, True]
    assert r.pair_id == [10, 10, 11, 11]
    assert r.revision_failed == [False, False, False, True]
    assert r.revision_replaced == [False] * 4
    assert r.env_mask[1] == [1, 1, 0, 1] and r.env_mask[0] == [1] * 5
    assert r.tokens_saved == [0, 1, 0, 0] and r.cut_paragraph == [-1, 3, -1, -1]
    assert r.logprobs is None


def test_duplicate_original_policy():
    revs = [RevisionOutcome([1, 2, 9, 10], [1, 1, 0, 1], ok=True), RevisionOutcome([6, 9, 11], [1, 0, 1], ok=False)]
    r = interleave(O, revs, "duplicate_original")
    assert r.completion_ids[3] == [6, 7, 8] and r.env_mask[3] == [1, 1, 1]
    assert r.revision_failed == [False] * 4 and r.revision_replaced == [False, False, False, True]


def test_scoring_failure_gives_a_copy_marked_by_policy():
    revs = [RevisionOutcome(None, error="server down"), RevisionOutcome(None, error="server down")]
    drop = interleave(O, revs, "drop")
    assert drop.completion_ids[1] == O[0].ids and drop.revision_failed[1] and drop.revision_replaced[1]
    dup = interleave(O, revs, "duplicate_original")
    assert dup.completion_ids[1] == O[0].ids and not dup.revision_failed[1]


def test_logprobs_follow_rows():
    o = [Sample([1, 2, 3], True, [-0.1, -0.2, -0.3])]
    r = interleave(o, [RevisionOutcome([1, 2, 7], [1, 0, 1], ok=True, logprobs=[-0.1, math.nan, -0.5])])
    assert r.logprobs[0] == [-0.1, -0.2, -0.3] and math.isnan(r.logprobs[1][1])


def test_apply_group_policies_drop_and_zero_accuracy():
    # two groups of 4 rows, columns: accuracy, length
    rewards = [[1, 0.5], [1, -0.5], [0, -0.5], [0, -0.5],   # group 1: one dropped revision (row 3)
               [0, -0.5], [0, -0.5], [0, -0.5], [0, -0.5]]  # group 2: all wrong
    dropped = [False, False, False, True, False, False, False, False]
    out = apply_group_policies(rewards, 4, 0, dropped, "zero_advantage")
    assert out[:3] == rewards[:3] and all(math.isnan(x) for x in out[3])
    assert all(math.isnan(x) for row in out[4:] for x in row)
    kept = apply_group_policies(rewards, 4, 0, dropped, "keep")
    assert kept[4:] == rewards[4:]
    with pytest.raises(ValueError):
        apply_group_policies(rewards[:3], 4, 0, dropped[:3])


def test_group_advantages_reference():
    adv = group_advantages([1.0, 0.0, math.nan, 0.5], 4)
    xs = [1.0, 0.0, 0.5]
    m = sum(xs) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / 2)
    assert adv == pytest.approx([(1 - m) / (sd + 1e-4), (0 - m) / (sd + 1e-4), 0.0, (0.5 - m) / (sd + 1e-4)])
    assert group_advantages([math.nan] * 4, 4) == [0.0] * 4
