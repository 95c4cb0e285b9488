import math

import pytest

from rearl.core.rewards import (
    AccuracyReward,
    AdaptiveLengthReward,
    KimiLengthReward,
    RefinedLengthReward,
    ReflectionReward,
    accuracy_reward,
    refined_length_reward,
)


def C(ans, pad=0):
    """A completion of a given extra length with a final boxed answer."""
    return "<think>" + "x" * pad + "</think>\\boxed{" + str(ans) + "}"


def ids_of(n):
    return [[7] * k for k in n]


def test_accuracy_reward_signature_and_columns():
    comps = [C(4), C(5), [{"role": "assistant", "content": C(4)}]]
    r = accuracy_reward(prompts=["p"] * 3, completions=comps, completion_ids=None, answer=["4", "4", "4"])
    assert r == [1.0, 0.0, 1.0]
    # `solution` is the authors' column name; MATH-style worked solutions reduce to their box
    r = accuracy_reward(prompts=None, completions=[C(4)], solution=["... so \\boxed{4}."])
    assert r == [1.0]
    with pytest.raises(ValueError, match="answer"):
        accuracy_reward(completions=[C(4)])


def test_require_close():
    r = AccuracyReward(require_close=True)(completions=["guess \\boxed{4}"], answer=["4"])
    assert r == [0.0]
    assert accuracy_reward(completions=["guess \\boxed{4}"], answer=["4"]) == [1.0]


def test_refined_length_edge_cases():
    f = RefinedLengthReward()
    # one correct -> 0 (code units); wrong -> -0.5
    r = f(completions=[C(1), C(2), C(2)], completion_ids=ids_of([10, 20, 30]), answer=["1"] * 3, problem=["q"] * 3)
    assert r == [0.0, -0.5, -0.5]
    # all correct, equal lengths -> 0
    r = f(completions=[C(1)] * 3, completion_ids=ids_of([10, 10, 10]), answer=["1"] * 3, problem=["q"] * 3)
    assert r == [0.0, 0.0, 0.0]
    # all wrong -> -0.5 each
    r = f(completions=[C(2)] * 2, completion_ids=ids_of([10, 30]), answer=["1"] * 2, problem=["q"] * 2)
    assert r == [-0.5, -0.5]
    # min/max over correct only: the long wrong one does not stretch the range
    r = f(completions=[C(1), C(1), C(1), C(2)], completion_ids=ids_of([10, 20, 30, 500]), answer=["1"] * 4, problem=["q"] * 4)
    assert r == [0.5, 0.0, -0.5, -0.5]
    # paper units: +0.5 (single correct -> 0.5, wrong -> 0)
    p = RefinedLengthReward(units="paper")
    r = p(completions=[C(1), C(2)], completion_ids=ids_of([10, 20]), answer=["1"] * 2, problem=["q"] * 2)
    assert r == [0.5, 0.0]


def test_groups_by_problem_not_position():
    # two problems interleaved in one call: ranges must not mix
    comps = [C(1), C(2), C(1), C(2)]
    lens = ids_of([10, 100, 30, 300])
    r = refined_length_reward(completions=comps, completion_ids=lens, answer=["1", "2", "1", "2"], problem=["a", "b", "a", "b"])
    assert r == [0.5, 0.5, -0.5, -0.5]


def test_kimi_length():
    f = KimiLengthReward()
    comps = [C(1), C(1), C(2)]
    r = f(completions=comps, completion_ids=ids_of([10, 30, 20]), answer=["1"] * 3, problem=["q"] * 3)
    assert r == [0.5, -0.5, 0.0]  # wrong gets min(0, lambda) = min(0, 0) = 0
    assert f(completions=[C(1)] * 2, completion_ids=ids_of([5, 5]), answer=["1"] * 2, problem=["q"] * 2) == [0.0, 0.0]
    # batch scope (authors' baseline) ignores problems
    b = KimiLengthReward(scope="batch", unit="chars")
    r = b(completions=[C(1), C(1, pad=10)], answer=["1", "1"], problem=["a", "b"])
    assert r == [0.5, -0.5]


def test_adaptive_length_penalty_scales_with_the_solve_rate():
    """ALP (arXiv 2506.05256): -beta * max(p_solved, 1/K) * L / N, p_solved per problem."""
    f = AdaptiveLengthReward(norm=100.0, beta=0.5)
    # problem a: 2 of 4 solved (p = 0.5); problem b: none solved (p = 1/K = 0.5 with K = 2)
    comps = [C(1), C(1), C(2), C(2), C(3), C(3)]
    r = f(completions=comps, completion_ids=ids_of([10, 20, 40, 80, 60, 100]), answer=["1"] * 4 + ["2"] * 2,
          problem=["a"] * 4 + ["b"] * 2)
    assert r == pytest.approx([-0.025, -0.05, -0.1, -0.2, -0.15, -0.25])
    # an easy problem (all solved) pays the full price per token; a hard one (1 of 4) a quarter of it
    easy = f(completions=[C(1)] * 4, completion_ids=ids_of([40] * 4), answer=["1"] * 4, problem=["e"] * 4)
    hard = f(completions=[C(1)] + [C(2)] * 3, completion_ids=ids_of([40] * 4), answer=["1"] * 4, problem=["h"] * 4)
    assert easy == pytest.approx([-0.2] * 4) and hard == pytest.approx([-0.05] * 4)
    # a dropped row (a failed revision under `drop`) is out of K and p_solved
    r = f(completions=[C(1), C(2)], completion_ids=ids_of([10, 10]), answer=["1"] * 2, problem=["q"] * 2,
          revision_failed=[False, True])
    assert r[0] == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="normaliser"):
        AdaptiveLengthReward(norm=0)


def test_reflection_reward_code_and_paper_forms(r1_tok):
    think = "Wait, let me check. " + "Compute more. " * 20
    text = "<think>" + think + "</think>\\boxed{1}"
    ids = r1_tok(text, add_special_tokens=False)["input_ids"]
    f = ReflectionReward(r1_tok, threshold=10.0)
    r, n_ref, n_tok = f.score(text, ids)
    assert n_ref == 1
    # thinking tokens are those strictly between the tag ids, found from the tokenizer
    open_id, close_id = r1_tok.convert_tokens_to_ids(["<think>", "</think>"])
    assert n_tok == ids.index(close_id) - ids.index(open_id) - 1
    assert r == pytest.approx(min(1.0 / n_tok * 10.0, 1.0))
    assert f(completions=[text], completion_ids=[ids]) == [pytest.approx(r)]
    p = ReflectionReward(r1_tok, threshold=10.0, form="paper")
    assert p(completions=[text], completion_ids=[ids])[0] == pytest.approx(r - 1)
    # dense reflection saturates at 1
    dense = "<think>wait\nwait\nwait</think>"
    assert f(completions=[dense], completion_ids=[r1_tok(dense, add_special_tokens=False)["input_ids"]]) == [1.0]


def test_reflection_reward_multi_token_tags(r1_tok):
    from rearl.core.text import ThinkTags

    tags = ThinkTags("<reasoning>", "</reasoning>")
    f = ReflectionReward(r1_tok, threshold=100.0, tags=tags)
    text = "<reasoning>wait, is it 2? yes it is two indeed.</reasoning>\\boxed{2}"
    r, n_ref, n_tok = f.score(text, r1_tok(text, add_special_tokens=False)["input_ids"])
    assert n_ref == 1 and 10 <= n_tok <= 16


def test_reflection_reward_from_calibration_file(tmp_path, r1_tok):
    import json

    p = tmp_path / "cal.json"
    p.write_text(json.dumps({"quantile": 0.2, "threshold": 225.09, "density_quantile": 1 / 225.09}))
    assert ReflectionReward(r1_tok, calibration=str(p)).threshold == 225.09
    with pytest.raises(ValueError):
        ReflectionReward(r1_tok)


NASTY = ["", "no tags at all", "<think>", "</think>", "x" * 1_000_000, "数学 🤔 wait\ud800", "<think>" + "wait but " * 50_000]


def test_every_reward_is_finite_on_any_input(r1_tok):
    refl = ReflectionReward(r1_tok, threshold=225.09)
    ids = [r1_tok(t.encode("utf-8", "replace").decode("utf-8"), add_special_tokens=False)["input_ids"][:5000] for t in NASTY]
    kw = dict(prompts=["p"] * len(NASTY), completions=NASTY, completion_ids=ids, answer=["1"] * len(NASTY), problem=["q"] * len(NASTY))
    for f in (accuracy_reward, refined_length_reward, KimiLengthReward(), KimiLengthReward(unit="chars", scope="batch"), refl):
        out = f(**kw)
        assert len(out) == len(NASTY) and all(isinstance(x, float) and math.isfinite(x) for x in out), f.__name__
    assert refl(completions=[], completion_ids=[]) == []
