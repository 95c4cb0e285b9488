"""Thinking/answer split and the REA-RL paragraph splitter (docs/method.md#paragraphs).

Framework-free: works on strings, token ids and a Hugging Face tokenizer (anything with
`__call__`, `decode` and `convert_ids_to_tokens`). No torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from rearl.core.tokens import TokenizedText

SENTENCE_END = (".", "!", "?", ";")
_PART_SEP = re.compile(r"\n{2,}")


@dataclass(frozen=True)
class ThinkTags:
    """The think delimiters. Ids are looked up in the tokenizer, never hard-coded (docs/method.md#where-we-differ-from-the-authors-code)."""

    open: str = "<think>"
    close: str = "</think>"
    open_id: int | None = None
    close_id: int | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, open: str = "<think>", close: str = "</think>") -> "ThinkTags":
        return cls(open, close, _single_token_id(tokenizer, open), _single_token_id(tokenizer, close))


def _single_token_id(tokenizer: Any, s: str) -> int | None:
    """The id of `s` if the tokenizer encodes it as exactly one token, else None."""
    try:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
    except Exception:
        return None
    return int(ids[0]) if len(ids) == 1 else None


# status values of ThinkSplit
OK = "ok"  # exactly one closing tag
MULTIPLE_CLOSE = "multiple_close"  # several closing tags: thinking ends at the first
UNCLOSED = "unclosed"  # an opening tag but no closing tag (e.g. cut off by the length limit)
NO_TAGS = "no_tags"  # plain text, or an R1-style completion cut off before `</think>`


@dataclass(frozen=True)
class ThinkSplit:
    """Character spans of the thinking part and the answer part of a completion."""

    text: str
    think_start: int
    think_end: int  # trailing whitespace of the thinking is excluded (docs/method.md#paragraphs)
    answer_start: int | None  # None when there is no closing tag
    status: str
    n_close_tags: int = 0

    @property
    def think(self) -> str:
        return self.text[self.think_start : self.think_end]

    @property
    def answer(self) -> str:
        return "" if self.answer_start is None else self.text[self.answer_start :]

    @property
    def closed(self) -> bool:
        return self.answer_start is not None


def split_think(text: str, tags: ThinkTags = ThinkTags()) -> ThinkSplit:
    """Split `text` at the first closing tag.

    Without a closing tag the whole completion (after an opening tag, if any) counts as thinking and
    the split is flagged, as docs/method.md#where-we-differ-from-the-authors-code recommends.
    """
    close = text.find(tags.close)
    open_ = text.find(tags.open)
    n_close = text.count(tags.close)
    if close >= 0:
        start = open_ + len(tags.open) if 0 <= open_ < close else 0
        end = start + len(text[start:close].rstrip())
        status = OK if n_close == 1 else MULTIPLE_CLOSE
        return ThinkSplit(text, start, end, close + len(tags.close), status, n_close)
    start = open_ + len(tags.open) if open_ >= 0 else 0
    end = start + len(text[start:].rstrip())
    return ThinkSplit(text, start, end, None, UNCLOSED if open_ >= 0 else NO_TAGS, 0)


@dataclass(frozen=True)
class Paragraph:
    """One paragraph ("step") of the thinking part.

    `text` is the normalised paragraph the reflection model sees (parts re-joined with a blank
    line, stripped). `char_start/char_end` locate it in the original completion text and
    `token_start/token_end` in the original completion ids ([start, end), tokens that straddle the
    paragraph's last character included).
    """

    index: int
    text: str
    char_start: int
    char_end: int
    n_tokens: int  # the splitter's own count (sum over parts of tokenizer.tokenize)
    token_start: int = -1
    token_end: int = -1


def split_parts(text: str) -> list[tuple[int, int]]:
    """Character spans of the non-blank pieces between runs of two or more newlines."""
    spans = []
    pos = 0
    for m in _PART_SEP.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _count_tokens(tokenizer: Any, pieces: list[str]) -> list[int]:
    if not pieces:
        return []
    enc = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    return [len(e) for e in enc]


def split_paragraphs(
    text: str,
    tokenizer: Any,
    *,
    offset: int = 0,
    min_tokens: int = 32,
    max_tokens: int = 128,
) -> list[Paragraph]:
    """The paragraph splitter of docs/method.md#paragraphs over `text` (the thinking part).

    Sentence rule: once the paragraph reaches `min_tokens` and a part ends in . ! ? ; the part is
    added and the paragraph closes. Size rule: otherwise, a part that would take the paragraph to
    `max_tokens` or more starts a new paragraph (or stands alone when the current one is empty).
    `offset` is added to every character position (the thinking part's start in the completion).
    """
    parts = split_parts(text)
    counts = _count_tokens(tokenizer, [text[a:b] for a, b in parts])
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_len = 0
    for k, ((a, b), n) in enumerate(zip(parts, counts)):
        ends_sentence = text[a:b].strip().endswith(SENTENCE_END)
        if cur_len + n >= min_tokens and ends_sentence:
            groups.append(cur + [k])
            cur, cur_len = [], 0
        elif cur_len + n >= max_tokens:
            if cur:
                groups.append(cur)
                cur, cur_len = [k], n
            else:
                groups.append([k])
                cur, cur_len = [], 0
        else:
            cur.append(k)
            cur_len += n
    if cur:
        groups.append(cur)

    paragraphs = []
    for idx, g in enumerate(groups):
        body = "\n\n".join(text[parts[k][0] : parts[k][1]] for k in g)
        a, b = parts[g[0]][0], parts[g[-1]][1]
        a += len(text[a:b]) - len(text[a:b].lstrip())
        b -= len(text[a:b]) - len(text[a:b].rstrip())
        paragraphs.append(Paragraph(idx, body.strip(), a + offset, b + offset, sum(counts[k] for k in g)))
    return paragraphs


@dataclass
class Segmentation:
    """A completion analysed once: its tokens, thinking/answer split and paragraphs."""

    tokens: TokenizedText
    split: ThinkSplit
    paragraphs: list[Paragraph] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.tokens.text

    @property
    def think_token_span(self) -> tuple[int, int]:
        """[start, end) of the thinking part in token space (tokens touching it included)."""
        s = self.split
        if s.think_end <= s.think_start:
            start = self.tokens.token_at_or_after(s.think_start)
            return start, start
        return self.tokens.token_at_or_after(s.think_start), self.tokens.tokens_ending_by(s.think_end)

    @property
    def think_tokens(self) -> int:
        a, b = self.think_token_span
        return b - a

    def kept_think_tokens(self, cut: int) -> int:
        """Thinking tokens kept when paragraphs 0..cut (inclusive) are kept."""
        if not self.paragraphs:
            return 0
        cut = max(0, min(cut, len(self.paragraphs) - 1))
        return max(0, self.paragraphs[cut].token_end - self.think_token_span[0])

    def prefix_ids(self, cut: int) -> list[int]:
        """The original ids of the completion up to the end of paragraph `cut` (no re-encoding)."""
        return self.tokens.ids[: self.paragraphs[cut].token_end]


def segment(
    tokenizer: Any,
    *,
    ids: Sequence[int] | None = None,
    text: str | None = None,
    tags: ThinkTags | None = None,
    max_think_tokens: int | None = None,
    min_tokens: int = 32,
    max_tokens: int = 128,
) -> Segmentation:
    """Tokenise (or decode) a completion, split off its thinking and split that into paragraphs.

    Give `ids` (a sampled completion: spans refer to exactly these ids) or `text` (it is encoded).
    `max_think_tokens` truncates the thinking first, like the authors' offline labelling.
    """
    if ids is None and text is None:
        raise ValueError("segment() needs ids or text")
    tags = tags or ThinkTags()
    tt = TokenizedText.from_ids(tokenizer, ids) if ids is not None else TokenizedText.from_text(tokenizer, text or "")
    split = split_think(tt.text, tags)
    seg = Segmentation(tt, split)
    think_start, think_end = split.think_start, split.think_end
    if max_think_tokens is not None:
        a, b = seg.think_token_span
        if b - a > max_think_tokens:
            think_end = min(think_end, tt.ends[a + max_think_tokens - 1]) if max_think_tokens > 0 else think_start
    paragraphs = split_paragraphs(
        tt.text[think_start:think_end], tokenizer, offset=think_start, min_tokens=min_tokens, max_tokens=max_tokens
    )
    seg.paragraphs = [
        Paragraph(
            p.index, p.text, p.char_start, p.char_end, p.n_tokens,
            tt.token_at_or_after(p.char_start), tt.tokens_ending_by(p.char_end),
        )
        for p in paragraphs
    ]
    return seg
