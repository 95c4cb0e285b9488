import pytest

from rearl.core.positions import cap_index, cut_positions


def probs(n, **kw):
    p = [0.1] * n
    for k, v in kw.items():
        p[int(k[1:])] = v
    return p


# Worked examples of the cut positions (outputs of the authors' function, docs/method.md#cut-positions).
@pytest.mark.parametrize(
    "p,expected",
    [
        (probs(20), (18, 18, 18)),
        (probs(20, p1=0.3, p2=0.6, p11=0.7, p12=0.8, p14=0.9), (11, 11, 14)),
        (probs(20, p1=0.9, p12=0.6), (1, 12, 12)),
        ([0.3, 0.4] + [0.2] * 8 + [0.45, 0.1, 0.6] + [0.2] * 7, (12, 12, 12)),
    ],
)
def test_spec_table(p, expected):
    pos = cut_positions(p, len(p))
    assert (pos.strong, pos.normal, pos.weak) == expected


@pytest.mark.parametrize("n,cap", [(3, 2), (5, 4), (9, 8), (10, 8), (30, 27), (100, 94), (200, 194)])
def test_cap(n, cap):
    assert cap_index(n) == cap
    pos = cut_positions([0.1] * n, n)
    assert (pos.strong, pos.normal, pos.weak) == (cap, cap, cap)
    assert not pos.found


def test_fewer_probabilities_than_paragraphs():
    # The reader may return fewer labels than paragraphs; missing ones count as "Think".
    pos = cut_positions([0.1] * 5 + [0.9], 20)
    assert pos.normal == 18 and not pos.found


def test_first_half_needs_flag():
    p = probs(20, p3=0.9)
    assert cut_positions(p).normal == 18
    assert cut_positions(p, second_half=False).normal == 3


def test_empty():
    assert cut_positions([], 0) is None
