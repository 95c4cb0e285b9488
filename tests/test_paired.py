"""Paired statistics of the testbed study: a bootstrap over tasks, differences over seeds."""

import math

import pytest

from rearl.testbed.paired import mean_spread, over_seeds, paired_bootstrap


def test_identical_methods_differ_by_nothing():
    a = {f"t{i}": float(i % 3 == 0) for i in range(200)}
    p = paired_bootstrap(a, dict(a))
    assert (p.diff, p.lo, p.hi, p.n) == (0.0, 0.0, 0.0, 200)


def test_interval_matches_the_normal_approximation():
    n = 1000
    b = {f"t{i}": float(i % 2 == 0) for i in range(n)}  # 50%
    a = {k: 1.0 if (v or int(k[1:]) % 10 == 1) else 0.0 for k, v in b.items()}  # b plus 10% more tasks
    p = paired_bootstrap(a, b, resamples=4000, seed=3)
    assert p.diff == pytest.approx(0.1)
    half = 1.96 * math.sqrt(0.1 * 0.9 / n)  # per-task differences are 0/1 with mean 0.1
    assert p.lo == pytest.approx(0.1 - half, abs=0.006) and p.hi == pytest.approx(0.1 + half, abs=0.006)
    # an independent-samples interval for the same accuracies (60% vs 50%) would be 2.3x as wide
    indep = 1.96 * math.sqrt(0.6 * 0.4 / n + 0.5 * 0.5 / n)
    assert (p.hi - p.lo) / 2 < indep / 2


def test_different_task_sets_are_refused():
    with pytest.raises(ValueError, match="different tasks"):
        paired_bootstrap({"a": 1.0, "b": 0.0}, {"a": 1.0, "c": 0.0})
    with pytest.raises(ValueError, match="no tasks"):
        paired_bootstrap({}, {})


def test_over_seeds_and_spread():
    ps = [paired_bootstrap({"x": 1.0, "y": 0.0}, {"x": 0.0, "y": 0.0}), paired_bootstrap({"x": 0.0, "y": 0.0}, {"x": 0.0, "y": 0.0})]
    s = over_seeds(ps)
    assert s["diff"] == 0.25 and s["min"] == 0.0 and s["max"] == 0.5 and s["seeds"] == 2 and len(s["per_seed"]) == 2
    assert mean_spread([1.0, None, 3.0]) == {"mean": 2.0, "min": 1.0, "max": 3.0, "seeds": 2}
    assert mean_spread([None]) is None
