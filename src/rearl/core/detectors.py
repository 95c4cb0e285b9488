"""Overthinking detection on reasoning traces: where was the answer already reached?

Detectors (all return a cut in the thinking part; paragraphs from the docs/method.md#paragraphs splitter):

* ``model``: a reflection model reads the paragraphs and gives P(Result) per paragraph
  (docs/method.md#the-reflection-model, `rearl.backends`); the Strong/Normal/Weak policy picks the cut.
* ``oracle``: uses the gold answer. A paragraph is a "Result" paragraph when it states an answer
  (a box, "the answer is ...", the right-hand side of a final equality, a number alone on a line)
  that the verifier accepts; the Strong/Normal/Weak policy of docs/method.md#cut-positions then picks the cut.
* ``first-reflection``: naive baseline asked for by reviewers: cut right before the first
  reflection keyword that follows the first answer-like statement (no gold needed).
* ``ratio``: the paper's fixed-proportion baseline: cut at the newline nearest to a fraction r of
  the thinking tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from rearl.core.answers import _box_contents, clean_answer
from rearl.core.normalize import quick_compare
from rearl.core.positions import CutPositions, cut_positions
from rearl.core.reflection import reflection_pattern
from rearl.core.text import Segmentation
from rearl.core.verify import VerifierPool, default_pool

DETECTORS = ("oracle", "model", "first-reflection", "ratio")

_NUM = r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
_ANSWER_IS = re.compile(r"(?i)\banswer\s*(?:is|:|=|would be|should be|must be)\s*:?\s*([^\n]{1,80})")
_IS_NUMBER = re.compile(rf"\b(?:is|are|equals|gives|get|got|be)\s+\$?\\?\(?\s*({_NUM})\s*\$?\\?\)?\s*(?:[.!;]|$)", re.M)
_EQ_LINE = re.compile(r"=\s*([^=\n]{1,60})$", re.M)
_ALONE = re.compile(r"^[\s$*\\\[\]()]*(" + _NUM + r")[\s$*\\\[\]().]*$", re.M)
_STRIP = re.compile(r"^(?:\$+|\\\(|\\\[|\*\*)+|(?:\$+|\\\)|\\\]|\*\*|[.,;:!])+$")


@dataclass(frozen=True)
class Mention:
    pos: int  # character position in the completion text
    answer: str


def _clean(s: str) -> str:
    s = s.strip()
    prev = None
    while prev != s:
        prev = s
        s = _STRIP.sub("", s).strip()
    return clean_answer(s)


def answer_mentions(text: str, start: int = 0, end: int | None = None) -> list[Mention]:
    """Answer-like statements in text[start:end], in order of position (deduplicated)."""
    end = len(text) if end is None else end
    region = text[start:end]
    found: dict[tuple[int, str], None] = {}

    def add(pos: int, ans: str) -> None:
        ans = _clean(ans)
        if ans and len(ans) <= 80:
            found[(start + pos, ans)] = None

    for pos, content in _box_contents(region):
        add(pos, content)
    for m in _ANSWER_IS.finditer(region):
        tail = re.split(r"(?<=[^\d])\.(?:\s|$)|\.$", m.group(1))[0]
        box = _box_contents(tail)
        add(m.start(), box[-1][1] if box else tail)
    for m in _IS_NUMBER.finditer(region):
        add(m.start(1), m.group(1).replace(",", ""))
    for m in _EQ_LINE.finditer(region):
        rhs = re.split(r"(?<=[^\d])\.\s|,\s|\s(?:so|which|and|then)\s", m.group(1))[0]
        add(m.start(1), rhs)
    for m in _ALONE.finditer(region):
        add(m.start(1), m.group(1).replace(",", ""))
    return [Mention(p, a) for p, a in sorted(found)]


def stated_answers(text: str) -> list[Mention]:
    """The explicit answer statements of a text (a box, "the answer is ..."), in order: what a paragraph
    concludes, unlike the equalities and numbers `answer_mentions` also collects."""
    found: dict[tuple[int, str], None] = {}
    for pos, content in _box_contents(text):
        if _clean(content):
            found[(pos, _clean(content))] = None
    for m in _ANSWER_IS.finditer(text):
        tail = re.split(r"(?<=[^\d])\.(?:\s|$)|\.$", m.group(1))[0]
        box = _box_contents(tail)
        ans = _clean(box[-1][1] if box else tail)
        if ans and len(ans) <= 80:
            found[(m.start(), ans)] = None
    return [Mention(p, a) for p, a in sorted(found)]


def correct_mentions(mentions: Sequence[Mention], gold: str, pool: VerifierPool | None = None) -> list[Mention]:
    """The mentions equivalent to `gold` (integers and exact matches decided here, the rest in the pool)."""
    pool = pool or default_pool()
    verdicts: list[Any] = []
    for m in mentions:
        q = quick_compare(gold, m.answer)
        verdicts.append(q if q is not None else pool.submit(gold, m.answer))
    return [m for m, v in zip(mentions, verdicts) if (v if isinstance(v, bool) else v.result().ok)]


@dataclass
class Detection:
    cut_paragraph: int | None  # last paragraph (partly) kept
    kept_char_end: int  # the kept thinking ends here (exclusive) in the completion text
    positions: CutPositions | None = None
    p_result: list[float] | None = None
    result_paragraphs: list[int] = field(default_factory=list)


def _paragraph_of(seg: Segmentation, char: int) -> int | None:
    """The paragraph that holds character `char`, or the last one that ends before it."""
    best = None
    for p in seg.paragraphs:
        if p.char_start <= char:
            best = p.index
        else:
            break
    return best


def model_detect(seg: Segmentation, p_result: Sequence[float], *, position: str = "normal",
                 second_half: bool = True) -> Detection:
    """Cut from a reflection model's P(Result) per paragraph (possibly fewer values than paragraphs)."""
    if not seg.paragraphs:
        return Detection(None, seg.split.think_start, p_result=list(p_result))
    pos = cut_positions(list(p_result), len(seg.paragraphs), second_half=second_half)
    assert pos is not None
    cut = pos.get(position)
    return Detection(cut, seg.paragraphs[cut].char_end, pos, list(p_result),
                     [i for i, p in enumerate(p_result) if p >= 0.5])


def oracle_detect(
    seg: Segmentation, gold: str | None, *, position: str = "normal", second_half: bool = True,
    mentions_ok: Sequence[Mention] | None = None, pool: VerifierPool | None = None,
) -> Detection:
    if not seg.paragraphs:
        return Detection(None, seg.split.think_start)
    probs = oracle_p_result(seg, gold, mentions_ok=mentions_ok, pool=pool)
    pos = cut_positions(probs, len(probs), second_half=second_half)
    assert pos is not None
    cut = pos.get(position)
    return Detection(cut, seg.paragraphs[cut].char_end, pos, probs, [i for i, p in enumerate(probs) if p >= 0.5])


def oracle_p_result(seg: Segmentation, gold: str | None, *, mentions_ok: Sequence[Mention] | None = None,
                    pool: VerifierPool | None = None) -> list[float]:
    """The oracle's P(Result) per paragraph: 1.0 where the thinking states an answer equivalent to `gold`."""
    if mentions_ok is None:
        if gold is None:
            raise ValueError("the oracle detector needs a gold answer")
        mentions_ok = correct_mentions(answer_mentions(seg.text, seg.split.think_start, seg.split.think_end), gold, pool)
    hit = {p.index for p in seg.paragraphs for m in mentions_ok if p.char_start <= m.pos < p.char_end}
    return [1.0 if i in hit else 0.0 for i in range(len(seg.paragraphs))]


def first_reflection_detect(seg: Segmentation, *, regex: str = "authors") -> Detection:
    s = seg.split
    mentions = answer_mentions(seg.text, s.think_start, s.think_end)
    if not mentions:
        return Detection(_paragraph_of(seg, s.think_end - 1) if seg.paragraphs else None, s.think_end)
    pat = reflection_pattern(regex)
    m = pat.search(seg.text, mentions[0].pos, s.think_end)
    if m is None:
        return Detection(_paragraph_of(seg, s.think_end - 1), s.think_end)
    end = len(seg.text[: m.start()].rstrip())
    return Detection(_paragraph_of(seg, max(s.think_start, end - 1)), max(s.think_start, end))


def ratio_detect(seg: Segmentation, *, ratio: float = 0.5) -> Detection:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    s = seg.split
    a, b = seg.think_token_span
    if b <= a:
        return Detection(None, s.think_start)
    k = a + max(1, round(ratio * (b - a)))
    target = min(s.think_end, seg.tokens.ends[k - 1])
    newlines = [m.start() for m in re.finditer(r"\n", seg.text[s.think_start : s.think_end])]
    if newlines:
        end = s.think_start + min(newlines, key=lambda x: abs(s.think_start + x - target))
    else:
        end = target
    end = s.think_start + len(seg.text[s.think_start : end].rstrip())
    return Detection(_paragraph_of(seg, max(s.think_start, end - 1)), end)
