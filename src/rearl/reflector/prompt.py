"""The reflection model's prompt, label format and probability reader (docs/method.md#the-reflection-model).

Framework-free: strings, token ids and a tokenizer. Backends that run a model live in
`rearl.backends`.

Format (used identically for training targets and inference, fixing the authors' `**[i].**`
target vs `[1].` prefill mismatch, docs/reflection-model.md): the response parts are shown as `**[i].** text`;
the reply is one line per part, `[i]. Think` or `[i]. Result`; the assistant turn is pre-filled
with `[1].`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

THINK, RESULT = "Think", "Result"
PREFILL = "[1]."

INSTRUCTIONS = (
    "Above is a math question and a response written by a model, split into {n} numbered parts. "
    "Label every part with one of two labels:\n"
    "- Think: the part reasons toward the answer.\n"
    "- Result: the part states the model's answer (this can happen before the end of the response).\n\n"
    "Reply with exactly one line per part, in order, and nothing else:\n"
    "[1]. Think or Result\n[2]. Think or Result\n...\n[{n}]. Think or Result"
)


def user_message(problem: str, paragraphs: Sequence[str]) -> str:
    parts = "\n\n".join(f"**[{i}].** {p}" for i, p in enumerate(paragraphs, 1))
    return f"**Question:** {problem}\n\n**Response:**\n\n{parts}\n\n" + INSTRUCTIONS.format(n=len(paragraphs))


def label_line(i: int, label: str) -> str:
    return f"[{i}]. {label}"


def target_text(labels: Sequence[str]) -> str:
    """The reply for training: `[1]. Think\\n[2]. Result...` (starts with the prefill)."""
    return "\n".join(label_line(i, lab) for i, lab in enumerate(labels, 1))


def chat_prompt(tokenizer: Any, problem: str, paragraphs: Sequence[str]) -> str:
    """The templated prompt text, ending with the assistant prefill `[1].`."""
    msgs = [{"role": "user", "content": user_message(problem, paragraphs)}]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + PREFILL


@dataclass
class ReflectionPrompt:
    text: str  # templated prompt incl. prefill
    ids: list[int]
    n_paragraphs: int  # paragraphs of the trace
    n_shown: int  # paragraphs that fit the context (the rest get no label)


REPLY_TOKENS_PER_LABEL = 8  # "[i]. Result\n" and the like
REPLY_SLACK = 8  # on top of the labels: what generate mode asks the server for beyond them


def reply_budget(n_labels: int, per_label: int = REPLY_TOKENS_PER_LABEL) -> int:
    """Tokens a generate-mode reply may take for `n_labels` labels: what the request asks (max_tokens) and
    what `build_prompt` keeps free, so that prompt + request never exceed the server's context (a 400 there
    is not retried: the revision would drop)."""
    return per_label * n_labels + REPLY_SLACK


def build_prompt(
    tokenizer: Any, problem: str, paragraphs: Sequence[str], max_prompt_tokens: int | None = None,
    reply_tokens_per_label: int = REPLY_TOKENS_PER_LABEL,
) -> ReflectionPrompt:
    """Build the prompt, dropping trailing paragraphs until prompt + reply (`reply_budget`) fit
    `max_prompt_tokens`.

    The authors sent prompts longer than the server's context (docs/method.md#where-we-differ-from-the-authors-code); here a trace that does
    not fit is shortened instead, and positions still use the full paragraph count.
    """
    n = len(paragraphs)
    k = n
    while True:
        text = chat_prompt(tokenizer, problem, paragraphs[:k])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_prompt_tokens is None or len(ids) + reply_budget(k, reply_tokens_per_label) <= max_prompt_tokens or k <= 1:
            break
        over = len(ids) + reply_budget(k, reply_tokens_per_label) - max_prompt_tokens
        # drop roughly enough paragraphs in one go, then refine one at a time
        avg = max(1, len(ids) // max(1, k))
        k = max(1, min(k - 1, k - over // (avg + reply_tokens_per_label)))
    if max_prompt_tokens is not None and len(ids) + reply_budget(k, reply_tokens_per_label) > max_prompt_tokens:
        raise ValueError(f"the reflection prompt does not fit {max_prompt_tokens} tokens even with one paragraph")
    return ReflectionPrompt(text, list(ids), n, k)


# -- the probability reader (docs/method.md#the-reflection-model) ---------------------------------------------------------
TopK = Sequence[tuple[str, float]]  # (token string, logprob), most likely first


def p_result_at(candidates: TopK, case_sensitive_top1: bool = True) -> float | None:
    """P(Result) at one generated position, or None if the position is not a label token.

    Skip unless the top-1 token contains `Think` or `Result` (case-sensitive, as the authors);
    then S_result / (S_think + S_result) summed over the top-k (case-insensitive). A candidate that
    contains both words says neither and is left out of both sums (summing it into both, as a plain
    substring test does, pulls P(Result) toward 0.5).
    """
    if not candidates:
        return None
    top = candidates[0][0]
    if case_sensitive_top1:
        is_label = THINK in top or RESULT in top
    else:
        is_label = "think" in top.lower() or "result" in top.lower()
    if not is_label:
        return None
    low = [(tok.lower(), lp) for tok, lp in candidates]
    s_r = sum(math.exp(lp) for tok, lp in low if "result" in tok and "think" not in tok)
    s_t = sum(math.exp(lp) for tok, lp in low if "think" in tok and "result" not in tok)
    if s_r + s_t <= 0:
        return None
    return s_r / (s_t + s_r)


def read_p_result(steps: Sequence[TopK], n_paragraphs: int | None = None, case_sensitive_top1: bool = True) -> list[float]:
    """P(Result) per emitted label, cut to the paragraph count."""
    out = [p for p in (p_result_at(c, case_sensitive_top1) for c in steps) if p is not None]
    return out[:n_paragraphs] if n_paragraphs is not None else out


_LABEL_LINE = re.compile(r"^\s*\**\[(\d+)\]\.?\**\s*(Think|Result)\b", re.M | re.I)


def parse_labels(reply: str, n: int) -> list[str | None]:
    """Labels from a reply text (with or without the prefill), by number; None where missing."""
    head = reply.lstrip().lower()
    text = PREFILL + reply if head.startswith(("think", "result")) else reply
    out: list[str | None] = [None] * n
    for m in _LABEL_LINE.finditer(text):
        i = int(m.group(1))
        if 1 <= i <= n and out[i - 1] is None:
            out[i - 1] = RESULT if m.group(2).lower() == "result" else THINK
    return out


# -- teacher-forced scoring skeleton ----------------------------------------------------------------
@dataclass
class Skeleton:
    ids: list[int]  # prompt ids + the forced label list
    slots: list[int]  # positions of each label's first token in `ids`
    think_id: int
    result_id: int


def label_token_ids(tokenizer: Any) -> tuple[int, int]:
    """First tokens of " Think" and " Result" (what follows `[i].`)."""
    t = tokenizer(" " + THINK, add_special_tokens=False)["input_ids"]
    r = tokenizer(" " + RESULT, add_special_tokens=False)["input_ids"]
    if not t or not r or t[0] == r[0]:
        raise ValueError("this tokenizer cannot tell ' Think' from ' Result' by their first token")
    return t[0], r[0]


def build_skeleton(tokenizer: Any, prompt: ReflectionPrompt) -> Skeleton:
    """Prompt + `[1]. Think\\n[2]. Think ...`: one forward pass reads every label slot.

    Every earlier label is forced to Think, whereas in `generate` mode the model conditions on its
    own earlier labels; the two can differ after the first Result (see docs).
    """
    think_id, result_id = label_token_ids(tokenizer)
    think_ids = tokenizer(" " + THINK, add_special_tokens=False)["input_ids"]
    ids = list(prompt.ids)
    slots = []
    for i in range(1, prompt.n_shown + 1):
        slots.append(len(ids))
        ids += think_ids
        if i < prompt.n_shown:
            ids += tokenizer(f"\n[{i + 1}].", add_special_tokens=False)["input_ids"]
    return Skeleton(ids, slots, think_id, result_id)


# -- what a scorer returns ------------------------------------------------------------------------
SCORING_MODES = ("forward", "generate")


@dataclass
class ScoreOutcome:
    """P(Result) per paragraph for one trace, or the reason there is none."""

    p_result: list[float] | None
    n_paragraphs: int
    n_shown: int = 0
    reply: str | None = None  # generated text (generate mode)
    error: str | None = None
    seconds: float = 0.0
