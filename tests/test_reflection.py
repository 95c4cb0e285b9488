import json

import pytest

from rearl.core.reflection import Calibration, calibrate, count_reflections, percentile


# reflection-count examples (docs/method.md#reflection-reward), checked with the authors' regex
@pytest.mark.parametrize(
    "text,n",
    [
        ("Wait, but let me check", 1),
        ("We distribute the butter. Wait.", 1),
        ("Alternatively, we could try x. But\nwait", 2),
        ("", 0),
        ("no keywords here", 0),
    ],
)
def test_authors_regex(text, n):
    assert count_reflections(text, "authors") == n


def test_word_boundaries():
    assert count_reflections("We distribute the butter.", "authors") == 1
    assert count_reflections("We distribute the butter.", "word") == 0
    assert count_reflections("await the result", "authors") == 1
    assert count_reflections("await the result", "word") == 0
    assert count_reflections("Wait, but let me check", "word") == 1


def test_chain_gap_60():
    gap = "x" * 59
    assert count_reflections(f"wait{gap}but") == 1
    assert count_reflections(f"wait{'x' * 60}but") == 2


def test_percentile_matches_numpy_linear():
    import numpy as np

    xs = [5.0, 1.0, 9.0, 3.3, 7.25, 100.0]
    for q in (0, 10, 50, 80, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_calibrate_threshold_is_p80_of_tokens_per_reflection(tmp_path):
    # tokens-per-reflection: 100, 200, ..., 1000 ; no reflection -> token count itself
    rows = [("wait " * 1, 100 * k) for k in range(1, 10)] + [("nothing", 1000)]
    cal = calibrate(rows, quantile=0.2)
    assert cal.threshold == pytest.approx(percentile([100 * k for k in range(1, 11)], 80))
    assert cal.density_quantile == pytest.approx(1 / cal.threshold)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cal.to_json()))
    assert Calibration.load(str(p)).threshold == cal.threshold


def test_calibrate_rejects_bad_quantile():
    with pytest.raises(ValueError):
        calibrate([("wait", 10)], quantile=1.5)
