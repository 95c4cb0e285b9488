"""Final-answer extraction (docs/method.md#accuracy-reward). Pure string code, no math libraries."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rearl.core.text import NO_TAGS, ThinkTags, split_think

BOX_COMMANDS = ("\\boxed", "\\fbox")
EXTRACT_MODES = ("answer_part", "last_boxed_anywhere", "math_verify")


def _match_brace(s: str, open_pos: int) -> int:
    """Index of the brace closing the one at `open_pos`, or -1. Escaped braces are skipped."""
    depth = 0
    i = open_pos
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _box_contents(s: str) -> list[tuple[int, str]]:
    """(position, content) of every `\\boxed{...}` / `\\fbox{...}` / `\\boxed X` in `s`, in order."""
    found = []
    for cmd in BOX_COMMANDS:
        start = 0
        while True:
            i = s.find(cmd, start)
            if i < 0:
                break
            j = i + len(cmd)
            start = j
            if j < len(s) and s[j].isalpha():  # \boxedfoo is another command
                continue
            k = j
            while k < len(s) and s[k] == " ":
                k += 1
            if k < len(s) and s[k] == "{":
                end = _match_brace(s, k)
                if end < 0:
                    continue
                found.append((i, s[k + 1 : end]))
            elif k > j:  # "\boxed 5": the argument runs to the next space or $
                m = re.match(r"[^\s$]+", s[k:])
                if m:
                    found.append((i, m.group(0)))
    found.sort()
    return found


def last_boxed(s: str) -> str | None:
    """Content of the last box in `s`, or None."""
    boxes = _box_contents(s)
    return boxes[-1][1] if boxes else None


def clean_answer(ans: str) -> str:
    """Unwrap one `\\text{...}` around the whole answer, strip spaces and a trailing period."""
    a = ans.strip()
    for wrapper in ("\\text{", "\\textbf{", "\\mathrm{"):
        if a.startswith(wrapper) and a.endswith("}") and _match_brace(a, len(wrapper) - 1) == len(a) - 1:
            a = a[len(wrapper) : -1].strip()
    while a.endswith(".") and not a.endswith(".."):
        a = a[:-1].rstrip()
    return a


@dataclass(frozen=True)
class Extracted:
    answer: str | None
    source: str  # "answer_part", "whole_text", "anywhere" or "none"
    think_status: str


def extract_answer(
    text: str, mode: str = "answer_part", tags: ThinkTags = ThinkTags(), require_close: bool = False
) -> Extracted:
    """The final answer of a completion.

    ``answer_part`` (default): the box after the first closing think tag (several boxes there are
    joined into one answer, a set, as math-verify does). A completion with an
    opening tag but no closing tag is unfinished and has no answer (the authors' code would score a
    boxed guess inside the thinking). Plain text with no tags at all is searched whole, unless
    `require_close` (set it for models whose chat template opens the thinking in the prompt, so an
    unfinished completion carries no tag at all).
    ``last_boxed_anywhere``: the authors' behaviour, the last box anywhere in the text.
    ``math_verify``: the whole answer part (same rules for unfinished thinking), for math-verify's
    own extraction in the verifier: unboxed final answers ("The answer is 7,425,000."), several
    boxes joined as a set, `$...$`.
    """
    if mode not in EXTRACT_MODES:
        raise ValueError(f"unknown extraction mode {mode!r}; choose one of {EXTRACT_MODES}")
    text = text or ""
    split = split_think(text, tags)
    if mode == "last_boxed_anywhere":
        b = last_boxed(text)
        return Extracted(clean_answer(b) if b is not None else None, "anywhere" if b is not None else "none", split.status)
    if mode == "math_verify":
        part = split.answer if split.closed else text if split.status == NO_TAGS and not require_close else ""
        part = part.strip()
        return Extracted(part or None, "answer_part" if part else "none", split.status)
    if split.closed:
        # Several boxes in the answer part are one answer, a set ("\\boxed{1}, \\boxed{2}"): joined
        # with commas, as math-verify joins them; inside the thinking only the last box would count.
        boxes = [clean_answer(c) for _, c in _box_contents(split.answer)]
        b = ", ".join(boxes) if boxes else None
        source = "answer_part"
    elif split.status == NO_TAGS and not require_close:
        b = last_boxed(text)
        source = "whole_text"
    else:
        b, source = None, "none"
    if b is None:
        return Extracted(None, "none", split.status)
    return Extracted(clean_answer(b), source, split.status)
