"""The toy world: multi-digit addition with tagged digits, in graded levels.

Every digit of the question carries a tag naming its operand and its place: operand x, y, z and
place a = ones, b = tens, ...; the problem 731 + 589 is ``xc7 xb3 xa1 + yc5 yb8 ya9``. A tiny
model trained from scratch cannot find "the tens digit of the second operand" among plain digits
within a CPU budget (docs/testbed.md). Place letters alone ("c7 b3 a1") are learnable
but leave it to pick the k-th "a" digit, and whether a 6M-token SFT gets there varies from run to
run (measured here: 98% then 5% accuracy from two builds that differed only in their data order).
With a tag per digit the lookup is a plain copy of the token after a matching tag, which small
transformers learn early. Answers are plain integers, so rearl's verifier checks them as is.

Operand lengths vary within a level. With fixed lengths every digit sits at the same distance
from the line that reads it, and the model learnt one positional shortcut per (level, tag) rather
than the lookup: a build read "xa" wrong on 90% of L4 problems, always as 8 or 1, and every other
tag right. Varying layouts leave content matching as the only rule that works.

Levels differ in operand count and length, and in whether the trace's *first pass* slips
(`slip`, used by `traces`): easy levels never slip, so their re-checks are redundant; on hard levels
the first pass passes a carry of 2 on as 1, every time, so a real re-check is worth its tokens
whenever a column reaches 20.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

PLACES = "abcdefgh"  # a = ones; a sum of <= 6 operands of <= 6 digits fits in 8 places
OPERANDS = "xyzuvw"  # the operand tags


@dataclass(frozen=True)
class Level:
    level: int
    operands: int
    digits: tuple[int, int]  # each operand has lo..hi digits, and at least one has hi
    # per column whose total reaches 20: chance the first pass passes its carry of 2 on as 1. Hard levels
    # use 1.0: a slip the model always makes is one RL cannot sample its way out of (world v3's random
    # slips, 25% per carried column, were unlearnt: 29% of the toy's hard first passes slipped, 9% after
    # GRPO + length, which then dropped the re-check at no cost; docs/testbed.md#the-world)
    slip: float
    # redundant re-checks after the (checked) answer: how often a sample of the toy LRM at the evaluation
    # temperature (SAMPLED_AT) makes 0, 1, 2, ... echoes; the generator draws `generator_echo_weights`
    echo_weights: tuple[float, ...]
    skip_check: float = 0.0  # hard levels: chance the trace skips its real re-check
    mid_check: float = 0.0  # per column: chance of a quick "wait , let me check" of its digit sum
    # echo counts a previous world's toy LRM actually sampled at SAMPLED_AT, when they missed `echo_weights`:
    # the generator's weights then get one correction step from them (`recalibrated_stops`)
    measured_echo_weights: tuple[float, ...] = ()
    # hard levels: the share of tasks whose first pass slips (some column reaches 20), drawn on purpose
    # (`make_task` redraws the operands until they agree); None: as uniform operands fall (v4: 30% on L3,
    # 42% on L4). World v5 sets 0.5, where GRPO's group vote on an unconditional re-check is about neutral
    # (scripts/group_vote.py, docs/testbed.md#world-v5)
    slip_share: float | None = None

    @property
    def hard(self) -> bool:
        return self.slip > 0

    @property
    def generator_echo_weights(self) -> tuple[float, ...]:
        flat = flattened_stops(self.echo_weights, SAMPLED_AT)
        if not self.measured_echo_weights:
            return flat
        return recalibrated_stops(flat, self.echo_weights, self.measured_echo_weights, SAMPLED_AT)

    @property
    def echoes(self) -> tuple[int, int]:
        """The fewest and most echoes a trace of this level has."""
        nz = [k for k, w in enumerate(self.echo_weights) if w > 0]
        return nz[0], nz[-1]


# The temperature the toy's samples are measured at (the story's evaluation temperature).
SAMPLED_AT = 0.6


def flattened_stops(weights: Sequence[float], temperature: float) -> tuple[float, ...]:
    """Echo-count weights for the generator such that a model that learnt them, sampled at `temperature`,
    makes 0, 1, 2, ... echoes with `weights`.

    After each echo (and after the answer) the model makes one binary choice, stop or echo again, with
    the hazard h_k = w_k / (w_k + w_k+1 + ...). Sampling at temperature T turns a learnt hazard g into
    1 / (1 + ((1 - g) / g) ** (1 / T)), which sharpens it (world v2, measured: generator 16% of easy traces
    stop at the answer, the toy at T=0.6 1%; hard 65% -> 79%). So the generator uses the inverse,
    g = 1 / (1 + ((1 - h) / h) ** T), and the weights that give those hazards.
    """
    out: list[float] = []
    left = 1.0  # the generator's share of traces still echoing
    rest = float(sum(weights))
    for k, w in enumerate(weights):
        if k == len(weights) - 1 or rest <= w:
            out.append(left)
            break
        h = w / rest
        g = 0.0 if h <= 0 else 1.0 / (1.0 + ((1.0 - h) / h) ** temperature)
        out.append(left * g)
        left -= left * g
        rest -= w
    out += [0.0] * (len(weights) - len(out))
    return tuple(round(x, 6) for x in out)


def _hazards(weights: Sequence[float]) -> list[float]:
    """Stop-or-echo-again hazards h_k = w_k / (w_k + w_k+1 + ...) (1.0 once nothing is left)."""
    out, rest = [], float(sum(weights))
    for w in weights:
        out.append(w / rest if rest > 1e-12 else 1.0)
        rest -= w
    return out


def recalibrated_stops(generator: Sequence[float], target: Sequence[float], measured: Sequence[float],
                       temperature: float) -> tuple[float, ...]:
    """One correction step for the generator's echo weights, from the echo counts a toy trained on
    `generator` actually sampled (`measured`) against the `target`.

    `flattened_stops` assumes sampling maps a learnt hazard's log-odds z to z / T. Where the measured
    hazard misses the target, move the generator's log-odds by T times the miss (the inverse slope of
    that map): logit g' = logit g + T (logit h_target - logit h_measured). Measured hazards are clipped
    to [0.02, 0.98] so a count seen once or never does not move a weight without bound.
    """
    import math

    def logit(p: float) -> float:
        p = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

    n = len(target)
    hg, ht, hm = _hazards(generator), _hazards(target), _hazards(list(measured)[:n] + [0.0] * (n - len(measured)))
    out, left = [], 1.0
    for k in range(n):
        if k == n - 1:
            g = 1.0
        else:
            m = min(max(hm[k], 0.02), 0.98)
            g = 1.0 / (1.0 + math.exp(-(logit(hg[k]) + temperature * (logit(ht[k]) - logit(m)))))
        out.append(left * g)
        left -= left * g
    return tuple(round(x, 6) for x in out)


# World v5 = v4 with (1) reflection *style* a length reward can strip: an incoming carry is added with
# "plus" (v2-v4: "but", a reflection word no policy could drop, so the first pass alone sat at the calibrated
# threshold and the reflection reward never bound), and 80% of the columns carry a quick "Wait , let me
# check : ..." (v4: 15-25%), 15 tokens each, the only reflection words before the answer; the re-check
# carries them too, so it is as reflection-dense as the pass it checks (real traces: about equal density before
# and after the answer). Stripping them all leaves no reflection at all, as GRPO + length does to real models;
# (2) a slip share of 0.5 on hard levels (`Level.slip_share`; v4's 0.36 fell out of uniform operands), the
# share where GRPO's group vote on an unconditional re-check is about neutral (scripts/group_vote.py at a re-check
# rate of 0.9: Kimi -0.005, REA-RL's refined -0.026, against -0.148 / -0.163 at v4's share), so what a method
# does with the re-check is what it learns per problem.
# World v4 = v3 with (1) hard levels' slips made systematic: the first pass passes every carry of 2 on as
# 1 (30% of L3 and 42% of L4 first passes), where v3 forgot any carry with probability 0.25 and RL
# unlearnt it; (2) the easy levels' generator echo counts corrected once from what v3's toy sampled at
# T=0.6 (`Level.measured_echo_weights`: it stopped after 1-2 echoes twice as often as the target, so
# the easy removable share was 0.42 against 0.50 and below the hard levels').
# World v3 = v2 with the echo counts flattened for sampling at T=0.6 (`flattened_stops`): v2's toy at T=0.6
# overthought more than real traces (removable share 0.61 against the band 0.35-0.55, p10 0.09).
# World v2 (docs/testbed.md#the-world), each choice from measuring real R1-distill traces with
# `rearl measure` (docs/testbed.md#toy-traces-next-to-real-ones):
# * easy levels (2 operands) are never wrong in their first pass; 0-5 echoes, so some traces stop
#   right after their answer (real p10 of the removable share: 0.00) and some overthink for long
#   (real p90: 0.67-0.81);
# * hard levels (3 operands, carries up to 2) slip; their real re-check is skipped in a quarter of
#   the traces, which are then wrong whenever the first pass slipped: reflecting less on hard
#   problems costs accuracy (what lets a length-only reward show the paper's failure mode; v4 makes
#   the slip systematic so that this stays true after RL);
# * every column may carry a quick check and every incoming carry a "but": reflection words inside
#   the reasoning, not only after the answer (real density before/after the answer: about equal).
# Operands have >= 2 digits (easy: one of 3-4): answers (>= 110) never equal a column's sum (<= 29),
# so the oracle's mention finder cannot take a column line for the answer.
# v3's toy at T=0.6 on its 100 held-out easy tasks (L1 and L2 pooled), 0..7 echoes; hard levels sampled at
# or above their target's stops (0.76 vs 0.65 with none) and are left as they are.
_EASY_SAMPLED_V3 = (0.16, 0.14, 0.22, 0.15, 0.11, 0.11, 0.07, 0.04)
_EASY_ECHOES = (0.16, 0.05, 0.08, 0.11, 0.14, 0.15, 0.16, 0.15)
# World v5: 80% of the columns carry a quick check (`traces.add_columns`, first pass and re-check alike), the only
# reflection words before the answer; half of the hard tasks slip (docs/testbed.md#world-v5)
MID_CHECK = 0.8
SLIP_SHARE = 0.5
LEVELS: dict[int, Level] = {
    1: Level(1, operands=2, digits=(2, 3), slip=0.0, echo_weights=_EASY_ECHOES, mid_check=MID_CHECK,
             measured_echo_weights=_EASY_SAMPLED_V3),
    2: Level(2, operands=2, digits=(3, 4), slip=0.0, echo_weights=_EASY_ECHOES, mid_check=MID_CHECK,
             measured_echo_weights=_EASY_SAMPLED_V3),
    3: Level(3, operands=3, digits=(2, 3), slip=1.0, echo_weights=(0.65, 0.25, 0.1), skip_check=0.25,
             mid_check=MID_CHECK, slip_share=SLIP_SHARE),
    4: Level(4, operands=3, digits=(3, 4), slip=1.0, echo_weights=(0.65, 0.25, 0.1), skip_check=0.25,
             mid_check=MID_CHECK, slip_share=SLIP_SHARE),
}
EASY = tuple(k for k, v in LEVELS.items() if not v.hard)
HARD = tuple(k for k, v in LEVELS.items() if v.hard)


@dataclass(frozen=True)
class Task:
    problem: str  # e.g. "xb7 xa3 + yb1 ya9": what the chat template shows after "Q :"
    answer: str  # the sum as a plain integer string, the gold for rearl's verifier
    level: int
    operands: tuple[int, ...]

    def row(self, id: str | None = None) -> dict:
        """A JSONL row that rearl's train/eval loaders read (`problem`, `answer`) plus `level`."""
        r = {"problem": self.problem, "answer": self.answer, "level": self.level}
        return {"id": id, **r} if id is not None else r


def hinted(n: int, operand: int | None = None) -> str:
    """731 -> 'c7 b3 a1'; with `operand` 0 (x): 'xc7 xb3 xa1'."""
    s = str(n)
    if len(s) > len(PLACES):
        raise ValueError(f"{n} has more than {len(PLACES)} digits")
    tag = "" if operand is None else OPERANDS[operand]
    return " ".join(tag + PLACES[len(s) - 1 - i] + ch for i, ch in enumerate(s))


_HINTED = re.compile(r"^([u-z]?)[a-h]\d(?: \1[a-h]\d)*$")  # the group is empty without operand tags


def unhint(s: str) -> int:
    """'c7 b3 a1' or 'xc7 xb3 xa1' -> 731 (the inverse of `hinted`: places must count down to a)."""
    s = s.strip()
    m = _HINTED.match(s)
    if not m:
        raise ValueError(f"not a tagged number: {s!r}")
    parts = [p[len(m.group(1) or ""):] for p in s.split()]
    if [p[0] for p in parts] != [PLACES[len(parts) - 1 - i] for i in range(len(parts))]:
        raise ValueError(f"place letters out of order: {s!r}")
    return int("".join(p[1] for p in parts))


def format_problem(operands: Sequence[int]) -> str:
    if len(operands) > len(OPERANDS):
        raise ValueError(f"at most {len(OPERANDS)} operands")
    return " + ".join(hinted(x, k) for k, x in enumerate(operands))


def parse_problem(problem: str) -> tuple[int, ...]:
    """The operands of a problem string (accepts the rearl prompt wrapper around it)."""
    body = problem.split("Question: ")[-1].strip()
    if body.endswith("= ?"):
        body = body[:-3].strip()
    return tuple(unhint(p) for p in body.split(" + "))


def level_of(operands: Sequence[int]) -> int | None:
    """The level a set of operands belongs to (operand count and longest operand decide)."""
    n = [len(str(x)) for x in operands]
    for k, lv in LEVELS.items():
        lo, hi = lv.digits
        if len(n) == lv.operands and max(n) == hi and min(n) >= lo:
            return k
    return None


def first_pass_slips(operands: Sequence[int]) -> bool:
    """Whether a first pass that passes every carry of 2 on as 1 (`Level.slip` 1.0) goes wrong: some
    column's digits plus its (possibly slipped) carry in reach 20. Mirrors `traces.add_columns`."""
    width = max(len(str(x)) for x in operands)
    carry = 0
    for col in range(width):
        total = sum(x // 10**col % 10 for x in operands if col < len(str(x))) + carry
        if total >= 20:
            return True
        carry = total // 10
    return False


def _draw_operands(rng: random.Random, lv: Level) -> tuple[int, ...]:
    lens = [rng.randint(*lv.digits) for _ in range(lv.operands)]
    lens[rng.randrange(lv.operands)] = lv.digits[1]
    return tuple(rng.randint(10 ** (n - 1), 10**n - 1) for n in lens)


def make_task(rng: random.Random, level: int) -> Task:
    lv = LEVELS[level]
    ops = _draw_operands(rng, lv)
    if lv.hard and lv.slip_share is not None:
        want = rng.random() < lv.slip_share
        while first_pass_slips(ops) != want:  # both kinds are common (>= 30% each), so this ends fast
            ops = _draw_operands(rng, lv)
    return Task(format_problem(ops), str(sum(ops)), level, ops)


def iter_tasks(levels: Sequence[int] = tuple(LEVELS), seed: int = 0,
               weights: Sequence[float] | None = None) -> Iterator[Task]:
    """An endless, seeded stream of tasks.

    Without `weights` the levels take turns (so any prefix is balanced); with weights each task's
    level is drawn at random in those proportions.
    """
    levels = list(levels)
    for lv in levels:
        if lv not in LEVELS:
            raise ValueError(f"unknown level {lv}; levels are {sorted(LEVELS)}")
    rng = random.Random(f"rearl-testbed-tasks:{seed}")
    k = 0
    while True:
        lv = levels[k % len(levels)] if weights is None else rng.choices(levels, weights)[0]
        yield make_task(rng, lv)
        k += 1


def make_tasks(n: int, levels: Sequence[int] = tuple(LEVELS), seed: int = 0,
               weights: Sequence[float] | None = None) -> list[Task]:
    """`n` tasks (the first `n` of `iter_tasks` with the same arguments)."""
    it = iter_tasks(levels, seed, weights)
    return [next(it) for _ in range(n)]


def write_jsonl(tasks: Iterable[Task], path: str | os.PathLike, prefix: str = "toy") -> Path:
    """Write tasks as JSONL rows {id, problem, answer, level}, atomically."""
    from rearl.core.io import write_text_atomic

    lines = [json.dumps(t.row(f"{prefix}-{i}")) for i, t in enumerate(tasks)]
    p = Path(path)
    write_text_atomic(p, "".join(line + "\n" for line in lines))
    return p


def level_table() -> list[dict]:
    return [asdict(v) for v in LEVELS.values()]
