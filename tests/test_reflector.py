import math

import pytest

from rearl.reflector.prompt import (
    PREFILL,
    build_prompt,
    build_skeleton,
    label_token_ids,
    p_result_at,
    parse_labels,
    read_p_result,
    target_text,
    user_message,
)

PARAS = ["First we set up the equation.", "Then x = 3.", "Wait, check: 3 works. So the answer is 3."]


def test_user_message_numbers_every_paragraph():
    m = user_message("What is x?", PARAS)
    assert m.startswith("**Question:** What is x?\n\n**Response:**")
    for i, p in enumerate(PARAS, 1):
        assert f"**[{i}].** {p}" in m
    assert "split into 3 numbered parts" in m and "[3]. Think or Result" in m


def test_prompt_uses_chat_template_and_prefill(r1_tok):
    p = build_prompt(r1_tok, "What is x?", PARAS)
    assert p.text.startswith(r1_tok.bos_token + "<｜User｜>**Question:**")
    assert p.text.endswith("<｜Assistant｜>" + PREFILL)
    assert p.ids == r1_tok(p.text, add_special_tokens=False)["input_ids"]
    assert (p.n_paragraphs, p.n_shown) == (3, 3)


def test_prompt_truncated_to_context(r1_tok):
    paras = [f"Paragraph {i} " + "word " * 60 + "." for i in range(100)]
    p = build_prompt(r1_tok, "Q", paras, max_prompt_tokens=2000)
    assert p.n_paragraphs == 100 and 1 <= p.n_shown < 100
    assert len(p.ids) + 8 * p.n_shown <= 2000
    assert f"**[{p.n_shown}].**" in p.text and f"**[{p.n_shown + 1}].**" not in p.text


def test_prompt_and_request_fit_the_context_together(r1_tok):
    """The generate-mode request asks reply_budget(n_shown) tokens; prompt + request must fit the context
    for every size (before: the prompt kept 8 per label free and the request asked 8 more, an HTTP 400)."""
    from rearl.reflector.prompt import reply_budget

    paras = [f"Paragraph {i} " + "word " * 30 + "." for i in range(20)]
    full = build_prompt(r1_tok, "Q", paras)
    exact = len(full.ids) + 8 * 20  # the old budget's exact fit: the whole trace
    for context in range(exact - 3, exact + 12):
        p = build_prompt(r1_tok, "Q", paras, max_prompt_tokens=context)
        assert len(p.ids) + reply_budget(p.n_shown) <= context, context
    assert build_prompt(r1_tok, "Q", paras, max_prompt_tokens=exact + 8).n_shown == 20
    assert build_prompt(r1_tok, "Q", paras, max_prompt_tokens=exact + 7).n_shown == 19


def test_target_format_matches_prefill():
    t = target_text(["Think", "Result", "Think"])
    assert t == "[1]. Think\n[2]. Result\n[3]. Think" and t.startswith(PREFILL)
    assert parse_labels(t, 3) == ["Think", "Result", "Think"]
    assert parse_labels(" Think\n[2]. Result", 3) == ["Think", "Result", None]
    assert parse_labels("**[1].** Result\n\n**[2].** Think", 2) == ["Result", "Think"]


def test_reader_semantics():
    lp = math.log
    # top-1 is a label token: sum over top-k case-insensitively
    assert p_result_at([(" Think", lp(0.6)), (" Result", lp(0.3)), (" result", lp(0.1))]) == pytest.approx(0.4)
    # top-1 is not a label token: skipped
    assert p_result_at([("\n", lp(0.9)), (" Result", lp(0.1))]) is None
    # the top-1 check is case-sensitive as in the authors' code
    assert p_result_at([(" think", lp(0.9))]) is None
    assert p_result_at([(" think", lp(0.9))], case_sensitive_top1=False) == 0.0
    steps = [[(" Think", lp(0.9)), (" Result", lp(0.1))], [("\n", 0.0)], [(" Result", lp(0.8)), (" Think", lp(0.2))]]
    assert read_p_result(steps) == [pytest.approx(0.1), pytest.approx(0.8)]
    assert read_p_result(steps, n_paragraphs=1) == [pytest.approx(0.1)]


def test_skeleton_slots_are_label_tokens(r1_tok):
    p = build_prompt(r1_tok, "What is x?", PARAS)
    sk = build_skeleton(r1_tok, p)
    t_id, r_id = label_token_ids(r1_tok)
    assert sk.ids[: len(p.ids)] == p.ids and len(sk.slots) == 3
    assert all(sk.ids[s] == t_id for s in sk.slots)
    tail = r1_tok.decode(sk.ids[len(p.ids):])
    assert tail == " Think\n[2]. Think\n[3]. Think"
    assert r_id != t_id
