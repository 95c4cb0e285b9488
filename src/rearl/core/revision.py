"""Sequential revision (docs/method.md#sequential-revision): keep the thinking up to the cut, close it with a
scaffold, and let the policy write the final answer.

The kept prefix is the original completion's own token ids (no decode/re-encode), so a revised
sequence shares its prefix exactly with the sample it came from. The scaffold is inserted by the
system, not sampled: `sampled_mask` tells the two apart so training can mask it. A revision that
does not reach EOS within the budget is marked incomplete (the authors append EOS regardless)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

DEFAULT_SCAFFOLD = "\n</think>\n\n**Final Answer:**\n\n"


class Policy(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, temperature: float = 0.6,
                 top_p: float = 1.0, top_k: int = 50, seed: int | None = None) -> list[Any]: ...


@dataclass
class Revision:
    ids: list[int]  # the revised completion: kept prefix + scaffold + generated answer
    text: str
    sampled_mask: list[int]  # 1 = sampled by the policy (kept prefix, answer), 0 = inserted scaffold
    n_kept: int
    n_scaffold: int
    n_generated: int
    completed: bool  # the answer ended with EOS within the budget
    logprobs: list[float] | None = None  # of the generated answer, when the policy returns them


def scaffold_ids(tokenizer: Any, prefix_text: str, scaffold: str = DEFAULT_SCAFFOLD) -> list[int]:
    """Scaffold ids. The authors strip the kept text before the scaffold; a token-exact prefix can
    end in whitespace (".\\n\\n" is one token in Qwen), so the scaffold's own leading newlines are
    dropped instead when the prefix already ends with a newline."""
    s = scaffold.lstrip("\n") if prefix_text.endswith("\n") else scaffold
    return list(tokenizer(s, add_special_tokens=False)["input_ids"])


SHORT_TRACE_RULES = ("drop_last_part", "none")


def kept_prefix_ids(seg: Any, cut: int, short_trace_rule: str = "drop_last_part") -> list[int]:
    """The completion's own ids that a revision keeps when cutting after paragraph `cut`.

    With ``drop_last_part`` (the authors' code) a cut at the trace's last paragraph, which only the cap
    of a short trace (n < 10) produces, also drops that text's last blank-line part, so the revision
    still removes something; the cut then falls on the start of that blank line.
    """
    if short_trace_rule not in SHORT_TRACE_RULES:
        raise ValueError(f"short_trace_rule must be one of {SHORT_TRACE_RULES}, got {short_trace_rule!r}")
    if short_trace_rule == "none" or cut != len(seg.paragraphs) - 1:
        return seg.prefix_ids(cut)
    start, end = seg.split.think_start, seg.paragraphs[cut].char_end
    k = seg.text.rfind("\n\n", start, end)
    return list(seg.tokens.ids[: seg.tokens.tokens_ending_by(k if k >= 0 else start)])


def revise(
    policy: Policy,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    prefix_ids: Sequence[Sequence[int]],
    *,
    scaffold: str = DEFAULT_SCAFFOLD,
    max_new_tokens: int = 256,
    temperature: float = 0.6,
    top_p: float = 1.0,
    top_k: int = 50,
    seed: int | None = None,
) -> list[Revision]:
    """Complete every kept prefix (`prefix_ids[i]`, completion ids) after `prompt_ids[i]`."""
    if len(prompt_ids) != len(prefix_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(prefix_ids)} prefixes")
    scaf = []
    inputs = []
    for p, k in zip(prompt_ids, prefix_ids):
        s = scaffold_ids(tokenizer, tokenizer.decode(list(k[-4:]), skip_special_tokens=False) if k else "", scaffold)
        scaf.append(s)
        inputs.append(list(p) + list(k) + s)
    gens = policy.generate(inputs, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    out = []
    for k, s, g in zip(prefix_ids, scaf, gens):
        ids = list(k) + s + list(g.ids)
        mask = [1] * len(k) + [0] * len(s) + [1] * len(g.ids)
        lp = getattr(g, "logprobs", None)
        out.append(Revision(ids, tokenizer.decode(ids, skip_special_tokens=True), mask, len(k), len(s), len(g.ids),
                            g.finished, list(lp) if lp is not None else None))
    return out


@dataclass
class Generation:
    ids: list[int]  # new tokens, EOS included when the model stopped by itself
    text: str
    finished: bool  # ended with EOS (not cut by max_new_tokens)
    exact: bool = True  # ids are the sampled ones (False: a server's text re-encoded)
