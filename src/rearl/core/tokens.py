"""Exact character offsets for token ids.

REA-RL cuts a sampled completion at a paragraph boundary. To keep the kept prefix token-identical to
what the policy sampled (docs/method.md#where-we-differ-from-the-authors-code "re-tokenisation drift"), every paragraph needs its span in the
*original* ids. Sampled ids are often not the canonical encoding of their text, so offsets cannot
come from re-encoding; they come from decoding each token, exactly.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    # The GPT-2 byte<->unicode table used by every byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None) if backend is not None else None
    return decoder is not None and type(decoder).__name__ == "ByteLevel"


def _added_token_contents(tokenizer: Any) -> dict[int, str]:
    table = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {int(i): getattr(t, "content", str(t)) for i, t in table.items()}


def _byte_level_ends(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[int]] | None:
    """Per-token end offsets (in characters) for a byte-level BPE tokenizer, in O(n)."""
    dec = _byte_decoder()
    added = _added_token_contents(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    buf = bytearray()
    byte_ends: list[int] = []
    for i, piece in zip(ids, pieces):
        if piece is None:
            return None
        if int(i) in added:
            buf += added[int(i)].encode("utf-8")
        else:
            try:
                buf += bytes(dec[c] for c in piece)
            except KeyError:
                return None
        byte_ends.append(len(buf))
    text = bytes(buf).decode("utf-8", errors="replace")
    if "\ufffd" in text:
        # Fall back when bytes do not form valid UTF-8: char<->byte mapping is then ambiguous.
        return None
    # Map byte offsets to char offsets: a token that ends inside a multi-byte char ends before it.
    char_at_byte = [0] * (len(buf) + 1)
    c = 0
    b = 0
    raw = bytes(buf)
    while b < len(raw):
        lead = raw[b]
        width = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        for k in range(width):
            if b + k <= len(raw):
                char_at_byte[b + k] = c
        b += width
        c += 1
    char_at_byte[len(raw)] = c
    return text, [char_at_byte[e] for e in byte_ends]


def _prefix_decode_ends(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[int]]:
    """Generic but quadratic fallback: decode every prefix."""
    ends = []
    for k in range(1, len(ids) + 1):
        ends.append(len(tokenizer.decode(list(ids[:k]), skip_special_tokens=False)))
    text = tokenizer.decode(list(ids), skip_special_tokens=False)
    # Decoding can shrink a prefix (a partial char becomes U+FFFD, then merges): keep ends monotone.
    for k in range(len(ends) - 2, -1, -1):
        ends[k] = min(ends[k], ends[k + 1])
    return text, ends


@dataclass
class TokenizedText:
    """A text with its token ids and, for each token, the [start, end) characters it covers."""

    text: str
    ids: list[int]
    ends: list[int]  # character end of each token; starts are the previous end

    @property
    def starts(self) -> list[int]:
        return [0] + self.ends[:-1]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_ids(cls, tokenizer: Any, ids: Sequence[int]) -> "TokenizedText":
        ids = [int(i) for i in ids]
        got = _byte_level_ends(tokenizer, ids) if _is_byte_level(tokenizer) else None
        if got is not None:
            text, ends = got
            if text == tokenizer.decode(ids, skip_special_tokens=False):
                return cls(text, ids, ends)
        text = tokenizer.decode(ids, skip_special_tokens=False)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids and "offset_mapping" in enc:
            return cls(text, ids, _ends_from_offsets(enc["offset_mapping"], len(text)))
        text, ends = _prefix_decode_ends(tokenizer, ids)
        return cls(text, ids, ends)

    @classmethod
    def from_text(cls, tokenizer: Any, text: str) -> "TokenizedText":
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        if "offset_mapping" in enc:
            return cls(text, ids, _ends_from_offsets(enc["offset_mapping"], len(text)))
        return cls.from_ids(tokenizer, ids)

    def token_at_or_after(self, char: int) -> int:
        """Index of the first token that ends after `char` (the token containing char `char`)."""
        return bisect.bisect_right(self.ends, char)

    def tokens_ending_by(self, char: int) -> int:
        """Number of leading tokens needed to cover characters [0, char)."""
        if char <= 0:
            return 0
        return min(len(self.ids), bisect.bisect_left(self.ends, char) + 1)


def _ends_from_offsets(offsets: Sequence[Sequence[int]], text_len: int) -> list[int]:
    # Offsets may leave gaps (trimmed whitespace) or be empty; ending each token where the next one
    # starts makes the spans tile the text.
    starts = [int(s) for s, _ in offsets]
    ends = starts[1:] + [text_len]
    for k in range(1, len(ends)):
        ends[k] = max(ends[k], ends[k - 1])
    return ends
