"""REA-RL reward functions with TRL's reward-function signature (docs/method.md#rewards).

Every reward is called as ``f(prompts=..., completions=..., completion_ids=..., **kwargs)`` where
kwargs carry the dataset columns (TRL repeats them per completion) and returns one finite float per
completion. The gold answer comes from the ``answer`` column (alias ``solution``); the problem group
from ``problem`` (fallback: the prompt's content). Groups are formed by content, never by position.

Rewards that need settings are classes; module-level instances with the defaults are provided.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any, Sequence

from rearl.core.answers import last_boxed
from rearl.core.reflection import count_reflections, reflection_pattern
from rearl.core.text import ThinkTags, split_think
from rearl.core.tokens import TokenizedText
from rearl.core.verify import VerifierPool, check_completions

LENGTH_UNITS = ("tokens", "chars")
LENGTH_SCOPES = ("per_problem", "batch")


# -- helpers ------------------------------------------------------------------------------------
def completion_text(c: Any) -> str:
    """Text of a TRL completion: a string, or a conversational list of messages."""
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, dict):
        return str(c.get("content") or "")
    if isinstance(c, (list, tuple)):
        return "".join(completion_text(m) for m in c if not isinstance(m, dict) or m.get("role", "assistant") == "assistant")
    return str(c)


GOLD_COLUMNS = ("answer", "solution")
# Private column with precomputed correctness: TRL forwards every dataset column to the rewards, so a
# public name such as `correct` would let a dataset column override the verifier.
CORRECT_KEY = "_rearl_correct"
FINISHED_KEY = "_rearl_finished"  # per row: reached EOS (set by the REA-RL rollout)


def gold_column(columns: Sequence[str]) -> str:
    """The dataset column that holds the gold answer (`answer`, else `solution`), or a clear error."""
    for c in GOLD_COLUMNS:
        if c in columns:
            return c
    raise ValueError(f"no gold answer column: the data needs one of {', '.join(GOLD_COLUMNS)} "
                     f"(columns: {', '.join(map(str, columns)) or 'none'})")


def normalize_gold(g: Any) -> str | None:
    """A gold answer as the verifier should see it: a worked solution (MATH style) or a boxed gold is
    reduced to its last box; math delimiters (`$...$`, also several as in `$a$,$b$`, `\\(...\\)`)
    and a currency `\\$` are removed, so the gold parses like an extracted answer."""
    if g is None:
        return None
    g = str(g).strip()
    box = last_boxed(g) if ("\\boxed" in g or "\\fbox" in g) else None
    if box is not None:
        g = box.strip()
    for a, b in (("\\(", "\\)"), ("\\[", "\\]")):
        if g.startswith(a) and g.endswith(b):
            g = g[len(a) : -len(b)].strip()
    g = re.sub(r"(?<!\\)\$", "", g).replace("\\$", "").strip()
    return g


def read_gold(row: dict[str, Any]) -> str | None:
    """The gold answer of one dataset row: the one reader used by the rewards and the rollout."""
    return normalize_gold(row[gold_column(list(row))])


def gold_answers(n: int, kwargs: dict[str, Any]) -> list[str | None]:
    """Per-completion gold answers from the `answer` column, else `solution` (see `normalize_gold`)."""
    col = kwargs[gold_column([k for k in GOLD_COLUMNS if kwargs.get(k) is not None])]
    if isinstance(col, (str, int, float)):
        col = [col] * n
    return [normalize_gold(g) for g in col]


def group_keys(n: int, prompts: Sequence[Any] | None, kwargs: dict[str, Any]) -> list[str]:
    col = kwargs.get("problem")
    if col is None:
        col = kwargs.get("question")
    if col is None and prompts is not None:
        col = [completion_text(p) if not isinstance(p, str) else p for p in prompts]
    if col is None:
        raise ValueError("length rewards need a 'problem' column (or prompts) to group completions by problem")
    if isinstance(col, str):
        return [col] * n
    return [str(x) for x in col]


def _lengths(unit: str, texts: list[str], completion_ids: Sequence[Sequence[int]] | None) -> list[int]:
    if unit == "chars":
        return [len(t) for t in texts]
    if completion_ids is None:
        raise ValueError("length unit 'tokens' needs completion_ids")
    return [len(ids) for ids in completion_ids]


def _finite(xs: list[float]) -> list[float]:
    return [x if math.isfinite(x) else 0.0 for x in xs]


def _length_groups(unit: str, accuracy: "AccuracyReward", prompts, completions, completion_ids, kwargs,
                   by_problem: bool = True) -> tuple[list[int], list[bool], list[list[int]]]:
    """Lengths, correctness and the index groups (by problem, or one batch group) of one call."""
    texts = [completion_text(c) for c in completions]
    lengths = _lengths(unit, texts, completion_ids)
    correct = accuracy.correctness(completions, kwargs, completion_ids)
    keys = group_keys(len(texts), prompts, kwargs) if by_problem else ["*"] * len(texts)
    # Rows the group policy drops afterwards (a failed revision under `failed_revision_policy: drop`)
    # must not move the min/max of the rows that stay; their own value is discarded (NaN) later.
    dropped = kwargs.get("revision_failed") or [False] * len(texts)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if not dropped[i]:
            groups[k].append(i)
    return lengths, correct, list(groups.values())


class _Reward:
    """Base: gives instances the `__name__` TRL uses for logging."""

    name = "reward"

    def __init__(self) -> None:
        self.__name__ = self.name


# -- accuracy -----------------------------------------------------------------------------------
class AccuracyReward(_Reward):
    """1.0 if the final answer is equivalent to the gold answer, else 0.0 (docs/method.md#accuracy-reward).

    `mode` = ``answer_part`` (default: answer after ``</think>``; unfinished thinking scores 0) or
    ``last_boxed_anywhere`` (the authors' code). `require_close=True` gives 0 to a completion
    without a closing think tag (for chat templates that open the thinking in the prompt).
    `eos_token_ids` + `require_eos=True` give 0 to a completion whose ids do not end with EOS (cut
    off by the token budget); the rollout's `FINISHED_KEY` column says the same without ids.
    """

    name = "accuracy"

    def __init__(self, mode: str = "answer_part", tags: ThinkTags = ThinkTags(), require_close: bool = False,
                 pool: VerifierPool | None = None, require_eos: bool = False, eos_token_ids: Sequence[int] = ()):
        super().__init__()
        if require_eos and not eos_token_ids:
            raise ValueError("require_eos needs eos_token_ids")
        self.mode, self.tags, self.require_close, self.pool = mode, tags, require_close, pool
        self.require_eos, self.eos_token_ids = require_eos, set(eos_token_ids)

    def finished(self, n: int, completion_ids: Sequence[Sequence[int]] | None, kwargs: dict[str, Any]) -> list[bool]:
        """Whether each completion reached EOS (True for all when it is not known or not required)."""
        if not self.require_eos:
            return [True] * n
        if kwargs.get(FINISHED_KEY) is not None:
            return [bool(f) for f in kwargs[FINISHED_KEY]]
        if completion_ids is None:
            raise ValueError(f"require_eos needs completion_ids (or a {FINISHED_KEY!r} column)")
        return [bool(ids) and ids[-1] in self.eos_token_ids for ids in completion_ids]

    def correctness(self, completions: Sequence[Any], kwargs: dict[str, Any],
                    completion_ids: Sequence[Sequence[int]] | None = None) -> list[bool]:
        if kwargs.get(CORRECT_KEY) is not None:
            return [bool(c) for c in kwargs[CORRECT_KEY]]
        texts = [completion_text(c) for c in completions]
        golds = gold_answers(len(texts), kwargs)
        done = self.finished(len(texts), completion_ids, kwargs)
        return [r.ok and f for r, f in zip(check_completions(
            texts, golds, mode=self.mode, tags=self.tags, require_close=self.require_close, pool=self.pool), done)]

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        completions = list(completions or [])
        return [1.0 if ok else 0.0 for ok in self.correctness(completions, kwargs, completion_ids)]


# -- length -------------------------------------------------------------------------------------
class KimiLengthReward(_Reward):
    """Kimi k1.5 length reward (arXiv 2501.12599, docs/method.md#length-rewards).

    Per problem group: lambda = 0.5 - (L - L_min) / (L_max - L_min); correct -> lambda,
    wrong -> min(0, lambda); all lengths equal -> 0. ``scope="batch"`` reproduces the authors'
    baseline (min/max over the whole call); ``unit="chars"`` their character lengths.
    """

    name = "kimi_length"

    def __init__(self, unit: str = "tokens", scope: str = "per_problem", accuracy: AccuracyReward | None = None):
        super().__init__()
        if unit not in LENGTH_UNITS:
            raise ValueError(f"unit must be one of {LENGTH_UNITS}, got {unit!r}")
        if scope not in LENGTH_SCOPES:
            raise ValueError(f"scope must be one of {LENGTH_SCOPES}, got {scope!r}")
        self.unit, self.scope, self.accuracy = unit, scope, accuracy or AccuracyReward()

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        completions = list(completions or [])
        if not completions:
            return []
        lengths, correct, groups = _length_groups(self.unit, self.accuracy, prompts, completions, completion_ids, kwargs,
                                                  by_problem=self.scope == "per_problem")
        out = [0.0] * len(completions)
        for idx in groups:
            lo = min(lengths[i] for i in idx)
            hi = max(lengths[i] for i in idx)
            if hi == lo:
                continue
            for i in idx:
                lam = 0.5 - (lengths[i] - lo) / (hi - lo)
                out[i] = lam if correct[i] else min(0.0, lam)
        return _finite(out)


class RefinedLengthReward(_Reward):
    """REA-RL's length reward (docs/method.md#length-rewards): per problem, min/max over *correct* completions only.

    ``units="code"`` (default, the authors' code): wrong -> -0.5, correct ->
    0.5 - (L - L_min) / (L_max - L_min), or 0 when all correct lengths are equal.
    ``units="paper"``: the same plus 0.5 (wrong -> 0, correct in [0, 1]); group normalisation makes
    the two identical in training.
    """

    name = "refined_length"

    def __init__(self, unit: str = "tokens", units: str = "code", accuracy: AccuracyReward | None = None):
        super().__init__()
        if unit not in LENGTH_UNITS:
            raise ValueError(f"unit must be one of {LENGTH_UNITS}, got {unit!r}")
        if units not in ("code", "paper"):
            raise ValueError(f"units must be 'code' or 'paper', got {units!r}")
        self.unit, self.units, self.accuracy = unit, units, accuracy or AccuracyReward()

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        completions = list(completions or [])
        if not completions:
            return []
        lengths, correct, groups = _length_groups(self.unit, self.accuracy, prompts, completions, completion_ids, kwargs)
        out = [-0.5] * len(completions)
        for idx in groups:
            ok = [i for i in idx if correct[i]]
            if not ok:
                continue
            lo = min(lengths[i] for i in ok)
            hi = max(lengths[i] for i in ok)
            for i in ok:
                out[i] = 0.0 if hi == lo else 0.5 - (lengths[i] - lo) / (hi - lo)
        shift = 0.5 if self.units == "paper" else 0.0
        return _finite([x + shift for x in out])


class AdaptiveLengthReward(_Reward):
    """ALP, the adaptive length penalty (Xiang et al., arXiv 2506.05256, docs/method.md#length-rewards):
    -beta * max(p_solved, 1/K) * L / N for every completion, where p_solved is the share of the problem's
    K completions that are correct and N normalises the length (`norm`: max_completion_length).

    Problems the policy solves reliably pay the full price per token; ones it rarely solves are left to
    think (a problem no sample solves pays 1/K of it). Added to the accuracy reward, so a long correct
    answer still beats a short wrong one. Rows a group policy drops do not count in K or p_solved.
    """

    name = "adaptive_length"

    def __init__(self, norm: float, beta: float = 1.0, unit: str = "tokens", accuracy: AccuracyReward | None = None):
        super().__init__()
        if unit not in LENGTH_UNITS:
            raise ValueError(f"unit must be one of {LENGTH_UNITS}, got {unit!r}")
        if not (norm > 0 and math.isfinite(norm)):
            raise ValueError(f"ALP's length normaliser must be a positive number, got {norm}")
        if not (beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"ALP's beta must be a non-negative number, got {beta}")
        self.norm, self.beta, self.unit, self.accuracy = float(norm), float(beta), unit, accuracy or AccuracyReward()

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        completions = list(completions or [])
        if not completions:
            return []
        lengths, correct, groups = _length_groups(self.unit, self.accuracy, prompts, completions, completion_ids, kwargs)
        out = [0.0] * len(completions)
        for idx in groups:
            solved = max(sum(correct[i] for i in idx) / len(idx), 1.0 / len(idx))
            for i in idx:
                out[i] = -self.beta * solved * lengths[i] / self.norm
        return _finite(out)


# -- reflection ---------------------------------------------------------------------------------
class ReflectionReward(_Reward):
    """Reflection-density reward (docs/method.md#reflection-reward).

    D = reflections in the thinking / thinking tokens. ``form="code"`` (default): min(D*T, 1),
    0 without thinking tokens. ``form="paper"``: min(0, D/D_q - 1) = code - 1. T comes from
    `threshold` or a `calibration` file written by ``rearl calibrate``.
    """

    name = "reflection"

    def __init__(
        self,
        tokenizer: Any = None,
        threshold: float | None = None,
        calibration: str | None = None,
        regex: str = "authors",
        form: str = "code",
        tags: ThinkTags | None = None,
    ):
        super().__init__()
        if (threshold is None) == (calibration is None):
            raise ValueError("ReflectionReward needs exactly one of threshold= or calibration=")
        if calibration is not None:
            from rearl.core.reflection import Calibration

            threshold = Calibration.load(calibration).threshold
        if not threshold or threshold <= 0 or not math.isfinite(threshold):
            raise ValueError(f"reflection threshold must be a positive number, got {threshold}")
        if form not in ("code", "paper"):
            raise ValueError(f"form must be 'code' or 'paper', got {form!r}")
        reflection_pattern(regex)  # validates the mode
        self.tokenizer = tokenizer
        self.tags = tags or (ThinkTags.from_tokenizer(tokenizer) if tokenizer is not None else ThinkTags())
        self.threshold, self.regex, self.form = float(threshold), regex, form

    def think_tokens(self, text: str, ids: Sequence[int] | None) -> int:
        """Thinking tokens of one completion, with the think tags resolved from the tokenizer."""
        if ids is None:
            if self.tokenizer is None:
                raise ValueError("ReflectionReward needs completion_ids or a tokenizer")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = list(ids)
        t = self.tags
        if t.close_id is not None:
            end = ids.index(t.close_id) if t.close_id in ids else len(ids)
            start = 0
            if t.open_id is not None and t.open_id in ids[:end]:
                start = ids.index(t.open_id) + 1
            return end - start
        if self.tokenizer is None:
            raise ValueError("ReflectionReward: the think tags are not single tokens; pass the tokenizer")
        from rearl.core.text import Segmentation

        tt = TokenizedText.from_ids(self.tokenizer, ids)
        return Segmentation(tt, split_think(tt.text, t)).think_tokens

    def score(self, text: str, ids: Sequence[int] | None) -> tuple[float, int, int]:
        split = split_think(text, self.tags)
        n_ref = count_reflections(split.think, self.regex)
        n_tok = self.think_tokens(text, ids)
        r = min(n_ref / n_tok * self.threshold, 1.0) if n_tok > 0 else 0.0
        if self.form == "paper":
            r -= 1.0
        return r, n_ref, n_tok

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        completions = list(completions or [])
        ids = completion_ids if completion_ids is not None else [None] * len(completions)
        return _finite([self.score(completion_text(c), i)[0] for c, i in zip(completions, ids)])


accuracy_reward = AccuracyReward()
kimi_length_reward = KimiLengthReward()
refined_length_reward = RefinedLengthReward()
