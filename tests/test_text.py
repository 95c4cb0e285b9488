import random

import pytest

from rearl.core.text import (
    MULTIPLE_CLOSE,
    NO_TAGS,
    OK,
    UNCLOSED,
    ThinkTags,
    segment,
    split_paragraphs,
    split_think,
)
from rearl.core.tokens import TokenizedText


class WordTok:
    """A tokenizer stand-in counting whitespace words, so splitter thresholds are exact by hand."""

    def __call__(self, x, add_special_tokens=False):
        if isinstance(x, list):
            return {"input_ids": [[0] * len(s.split()) for s in x]}
        return {"input_ids": [0] * len(x.split())}


def words(n, end="."):
    return " ".join(f"w{i}" for i in range(n - 1)) + f" w{n - 1}{end}"


def test_split_think_cases():
    s = split_think("<think>\nabc  \n</think>\n\nans")
    assert (s.think, s.answer.strip(), s.status) == ("\nabc", "ans", OK)
    s = split_think("abc</think>x</think>y")
    assert (s.think, s.answer, s.status, s.n_close_tags) == ("abc", "x</think>y", MULTIPLE_CLOSE, 2)
    s = split_think("<think>cut off")
    assert (s.think, s.closed, s.status) == ("cut off", False, UNCLOSED)
    s = split_think("just text")
    assert (s.think, s.answer, s.status) == ("just text", "", NO_TAGS)
    s = split_think("")
    assert s.think == "" and s.status == NO_TAGS


def test_sentence_rule_closes_at_32_tokens():
    tok = WordTok()
    text = "\n\n".join([words(20), words(12), words(5)])  # 20 + 12 = 32 and ends with "."
    ps = split_paragraphs(text, tok)
    assert [p.n_tokens for p in ps] == [32, 5]
    assert ps[0].text == words(20) + "\n\n" + words(12)


def test_sentence_rule_needs_punctuation_latex_never_closes():
    tok = WordTok()
    text = "\n\n".join([words(20), words(20, end=" $x$"), words(20, end=r" \]"), words(10)])
    ps = split_paragraphs(text, tok)
    # nothing ends a sentence before the last part: parts gather until the 128 rule or the end
    assert len(ps) == 1 and ps[0].n_tokens == 20 + 21 + 21 + 10


def test_size_rule_128():
    tok = WordTok()
    text = "\n\n".join([words(100, end=","), words(40, end=","), words(200, end=","), words(3)])
    ps = split_paragraphs(text, tok)
    # 100+40 >= 128 -> close [100], [40] starts the next; 40+200 >= 128 -> close [40], [200] starts
    # the next; the last part ends a sentence and 200+3 >= 32, so the sentence rule adds it first.
    assert [p.n_tokens for p in ps] == [100, 40, 203]


def test_oversized_part_alone_when_paragraph_empty():
    tok = WordTok()
    text = "\n\n".join([words(40), words(300, end=","), words(10)])
    ps = split_paragraphs(text, tok)
    assert [p.n_tokens for p in ps] == [40, 300, 10]


def test_blank_parts_dropped_and_runs_of_newlines():
    tok = WordTok()
    text = words(40) + "\n\n\n\n   \n\n" + words(40)
    ps = split_paragraphs(text, tok)
    assert len(ps) == 2
    assert text[ps[1].char_start : ps[1].char_end] == ps[1].text


def test_think_tags_resolved_from_real_tokenizer(r1_tok):
    tags = ThinkTags.from_tokenizer(r1_tok)
    assert tags.open_id == r1_tok.convert_tokens_to_ids("<think>")
    assert tags.close_id == r1_tok.convert_tokens_to_ids("</think>")
    assert ThinkTags.from_tokenizer(r1_tok, "<reasoning>", "</reasoning>").close_id is None


def _check_spans(seg):
    ids = seg.tokens.ids
    for p in seg.paragraphs:
        covered = seg.tokens.text[seg.tokens.starts[p.token_start] : seg.tokens.ends[p.token_end - 1]]
        assert p.text.split("\n\n")[0] in covered
        assert covered.strip().startswith(p.text[:20].strip())
        assert seg.prefix_ids(p.index) == ids[: p.token_end]
    ends = [p.token_end for p in seg.paragraphs]
    assert ends == sorted(ends)


def test_spans_on_real_trace_ids(r1_tok, shared):
    import json

    rec = json.loads((shared / "data/traces/r1_distill_qwen14b_math500_sentences.jsonl").read_text().splitlines()[0])
    text = rec["thinking"] + "\n</think>" + rec["tail"]
    ids = r1_tok(text, add_special_tokens=False)["input_ids"]
    seg = segment(r1_tok, ids=ids)
    assert seg.tokens.text == text and seg.split.status == OK
    assert len(seg.paragraphs) > 5
    _check_spans(seg)
    # thinking tokens end right before </think>
    a, b = seg.think_token_span
    assert ids[b] == r1_tok.convert_tokens_to_ids("</think>") or r1_tok.decode(ids[b:b + 2]).strip().startswith("</think>")


def test_spans_on_non_canonical_sampled_ids(r1_tok):
    # Sampled ids are often not the canonical encoding of their text (e.g. "wa"+"it").
    text = "Let me compute 12*7 = 84.\n\nWait, check: 84 is right.\n\nSo the answer is 84.\n</think>\n\\boxed{84}"
    canon = r1_tok(text, add_special_tokens=False)["input_ids"]
    rng = random.Random(0)
    odd = []
    for i in canon:
        piece = r1_tok.decode([i])
        sub = r1_tok(piece[:1], add_special_tokens=False)["input_ids"] + r1_tok(piece[1:], add_special_tokens=False)["input_ids"] \
            if len(piece) > 2 and piece.isascii() and rng.random() < 0.5 and piece != "</think>" else [i]
        odd.extend(sub)
    assert odd != canon and r1_tok.decode(odd) == text
    tt = TokenizedText.from_ids(r1_tok, odd)
    assert tt.text == text and len(tt.ends) == len(odd)
    for k in range(len(odd)):
        assert text[: tt.ends[k]] == r1_tok.decode(odd[: k + 1])
    seg = segment(r1_tok, ids=odd, min_tokens=5)
    _check_spans(seg)
    assert r1_tok.decode(seg.prefix_ids(0)).startswith("Let me compute 12*7 = 84.")


def test_multibyte_and_special_tokens(r1_tok):
    text = "<think>\n数学 é 🤔 wait\n\nok.</think>答え \\boxed{2}"
    ids = r1_tok(text, add_special_tokens=False)["input_ids"]
    tt = TokenizedText.from_ids(r1_tok, ids)
    assert tt.text == text
    for k in range(len(ids)):
        assert text.startswith(r1_tok.decode(ids[: k + 1])) or "\ufffd" in r1_tok.decode(ids[: k + 1])


def test_multi_token_tags(r1_tok):
    tags = ThinkTags("<reasoning>", "</reasoning>")
    text = "<reasoning>step one is done.\n\nstep two.</reasoning>\\boxed{1}"
    seg = segment(r1_tok, text=text, tags=tags, min_tokens=2)
    assert seg.split.think == "step one is done.\n\nstep two."
    a, b = seg.think_token_span
    think = r1_tok.decode(seg.tokens.ids[a:b])
    # a token may straddle the end of the thinking and the tag (here ".</"): it counts as thinking
    assert think.startswith("step one") and "step two." in think
    assert "reasoning>" not in think


def test_max_think_tokens_truncates(r1_tok):
    text = "\n\n".join(f"Sentence number {i} is here." for i in range(50)) + "</think>x"
    full = segment(r1_tok, text=text, min_tokens=1)
    short = segment(r1_tok, text=text, min_tokens=1, max_think_tokens=40)
    assert len(short.paragraphs) < len(full.paragraphs)
    assert short.paragraphs[-1].token_end <= 41


def test_segment_needs_input(r1_tok):
    with pytest.raises(ValueError):
        segment(r1_tok)
