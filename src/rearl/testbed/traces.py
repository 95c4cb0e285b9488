"""R1-style overthinking traces for the toy world, the SFT data of the toy reasoning model.

A trace is a completion that follows the prompt ``<eos>Q : {problem} = ?\\n<think>\\n``:

1. a first pass, column by column from the right, then "So the sum is e1 d6 ... , and the answer
   is N ." (one blank-line separated part);
2. on hard levels a real re-check: the columns again, operands in reverse order, carries included,
   then either "It matches ..." or "But X does not match Y ..." and the corrected answer. The first
   pass of a hard level forgets a carry with probability `Level.slip` per column, so this check is
   what makes the answer right, and it cannot be done by copying the first pass;
3. redundant re-checks ("echoes") that restate what is already known, each in its own part and
   each opening with one reflection keyword (wait / but / alternatively / check);
4. ``\\n</think>\\n\\n\\boxed{N}``.

Text conventions, which the tokenizer relies on to decode exactly: tokens are separated by one
space, numbers are written without spaces, lines are joined by a bare ``\\n`` and parts by a blank
line. Every part is long enough (>= 32 tokens) for the docs/method.md#paragraphs paragraph splitter to close it on its
own, so the answer statement and each re-check land in different paragraphs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from rearl.testbed.tasks import LEVELS, OPERANDS, PLACES, Task, level_of

PROMPT_PREFIX = "Q : "
PROMPT_SUFFIX = " = ?\n<think>\n"
THINK_CLOSE = "\n</think>\n\n"
EOS = "<eos>"
# What REA-RL should insert after a cut for this model (rearl's default adds "**Final Answer:**",
# words the toy vocabulary does not have): REARLConfig.revision_scaffold / ReviseConfig.scaffold.
REVISION_SCAFFOLD = THINK_CLOSE


def prompt_text(problem: str) -> str:
    """The toy prompt, as the tokenizer's chat template renders it (generation prompt included)."""
    return f"{EOS}{PROMPT_PREFIX}{problem}{PROMPT_SUFFIX}"


@dataclass
class Columns:
    lines: list[str]
    digits: list[int]  # result digits, ones first
    carries: list[int]  # carry out of each column that has operand digits
    slipped: list[int] = field(default_factory=list)  # columns whose carry in was forgotten

    @property
    def value(self) -> int:
        return int("".join(str(d) for d in reversed(self.digits)))

    @property
    def hinted(self) -> str:
        return " ".join(PLACES[i] + str(d) for i, d in reversed(list(enumerate(self.digits))))


def add_columns(operands: Sequence[int], *, reverse: bool = False, slip: float = 0.0,
                rng: random.Random | None = None) -> Columns:
    """Column-by-column addition lines, e.g. ``b : xb3 + yb8 + zb6 + 1 = 18 , write 8 carry 1 .``.

    Each operand digit is written with its tag, as in the question, and the carry in is the last,
    untagged term. With `slip` > 0 each column that has a carry in forgets it with that
    probability (the sum is then of the digits alone): a realistic first-pass error whose result
    is always wrong by carry * 10^column.
    """
    tagged = [(OPERANDS[k], str(x)) for k, x in enumerate(operands)]
    if reverse:
        tagged = tagged[::-1]
    width = max(len(s) for _, s in tagged)
    lines, digits, carries, slipped = [], [], [], []
    carry = 0
    for col in range(width):
        here = [(tag, int(s[-1 - col])) for tag, s in tagged if col < len(s)]
        forgot = carry > 0 and slip > 0 and rng is not None and rng.random() < slip
        if forgot:
            slipped.append(col)
        terms = [f"{tag}{PLACES[col]}{d}" for tag, d in here]
        total = sum(d for _, d in here)
        if carry and not forgot:
            terms.append(str(carry))
            total += carry
        lines.append(f"{PLACES[col]} : {' + '.join(terms)} = {total} , write {total % 10} carry {total // 10} .")
        digits.append(total % 10)
        carry = total // 10
        carries.append(carry)
    col = width
    while carry:  # the leading column holds only the carry
        lines.append(f"{PLACES[col]} : {carry} = {carry} , write {carry % 10} carry {carry // 10} .")
        digits.append(carry % 10)
        carry //= 10
        col += 1
    return Columns(lines, digits, carries, slipped)


# -- redundant re-checks: each restates known facts; one reflection keyword, on its first line -----
def _echo_read(c: Columns, ops: Sequence[int], ans: int) -> str:
    said = " , ".join(f"{PLACES[i]} gives {d}" for i, d in enumerate(c.digits))
    return (f"Wait , let me double-check by reading the written digits of every column again : {said} .\n"
            f"Putting them together , the answer is still {ans} .")


def _echo_carries(c: Columns, ops: Sequence[int], ans: int) -> str:
    said = " , ".join(f"after {PLACES[i]} the carry is {k}" for i, k in enumerate(c.carries))
    return (f"But let me make sure that every carry was added to the next column : {said} .\n"
            f"Yes , all the carries were added , so the answer is {ans} .")


def _echo_order(c: Columns, ops: Sequence[int], ans: int) -> str:
    other = " + ".join(map(str, ops[::-1]))
    return (f"Alternatively , I can add the same numbers in the other order : {other} = {ans} .\n"
            f"That gives the same sum as before , so the answer is {ans} .")


def _echo_left(c: Columns, ops: Sequence[int], ans: int) -> str:
    said = " , ".join(f"{PLACES[i]} gives {d}" for i, d in reversed(list(enumerate(c.digits))))
    return (f"Let me check once more , this time reading the columns from the left : {said} .\n"
            f"Reading it back in order , the answer is {ans} .")


ECHOES = (_echo_read, _echo_carries, _echo_order, _echo_left)


@dataclass
class Trace:
    task: Task
    text: str  # the completion: everything after the prompt, ending with the box
    first_answer: int  # what the first pass stated
    checked: bool  # a real re-check follows the first pass (hard levels)
    slipped: bool  # the first pass forgot a carry (then the check corrects it)
    n_echoes: int

    @property
    def document(self) -> str:
        """Prompt + completion + EOS: one SFT document."""
        return prompt_text(self.task.problem) + self.text + EOS


def make_trace(task: Task, rng: random.Random) -> Trace:
    lv = LEVELS[task.level]
    ops = task.operands
    gold = int(task.answer)
    first = add_columns(ops, slip=lv.slip, rng=rng)
    parts = ["Let me add the columns from the right .\n" + "\n".join(first.lines)
             + f"\nSo the sum is {first.hinted} , and the answer is {first.value} ."]
    final = first
    if lv.hard:
        check = add_columns(ops, reverse=True)
        body = ("Wait , let me check it again , adding from the bottom number up .\n" + "\n".join(check.lines)
                + f"\nThis gives {check.hinted} , that is {check.value} .")
        if check.value == first.value:
            body += f"\nIt matches the first result , so the answer is {check.value} ."
        else:
            body += (f"\nBut {check.value} does not match {first.value} , so the first pass was wrong ."
                     f"\nThe correct answer is {check.value} .")
        parts.append(body)
        final = check
    assert final.value == gold, (task, final.value)
    n_echo = rng.randint(*lv.echoes)
    for echo in rng.sample(ECHOES, n_echo):
        parts.append(echo(final, ops, gold))
    text = "\n\n".join(parts) + f"{THINK_CLOSE}\\boxed{{{gold}}}"
    return Trace(task, text, first.value, lv.hard, bool(first.slipped), n_echo)


def make_traces(tasks: Sequence[Task], seed: int = 0) -> list[Trace]:
    rng = random.Random(f"rearl-testbed-traces:{seed}")
    return [make_trace(t, rng) for t in tasks]


def finish_document(trace: Trace, rng: random.Random) -> str:
    """An SFT document that teaches finishing from a cut: the trace cut at a random line end after
    its first answer, ``\\n</think>\\n\\n`` forced, and the box holding the last answer stated so far.

    REA-RL cuts the thinking and lets the policy write the answer (docs/method.md#sequential-revision); a model that never
    saw `</think>` at such a point boxes garbage (measured: 43% right after a correct first answer
    on L3). Train the box only (the loss starts after the forced tags), so these documents do not
    teach the model to stop thinking early.
    """
    think = trace.text[: trace.text.index(THINK_CLOSE)]
    first_end = answer_statements(think)[0].end
    lines = [i for i in range(first_end, len(think)) if think[i] == "\n" and think[i - 1] != "\n"]
    paragraphs = [i for i in lines if think.startswith("\n\n", i)]
    # half at paragraph ends (where REA-RL cuts), half at any line end (ratio-style baselines)
    pool = paragraphs if paragraphs and rng.random() < 0.5 else lines
    cut = rng.choice(pool) if pool else len(think)
    kept = think[:cut]
    last = answer_statements(kept)[-1].value
    return prompt_text(trace.task.problem) + kept + f"{THINK_CLOSE}\\boxed{{{last}}}" + EOS


# -- reading traces back (exact parsing of our own format) ----------------------------------------
# Every statement of a final value: "the answer is (still) N", "that is N" (the check's result).
ANSWER_STATEMENT = re.compile(r"\b(?:answer is(?: still)?|that is)\s+(\d+)\s+\.")


@dataclass(frozen=True)
class Statement:
    start: int  # character span of the whole line holding it
    end: int
    value: int


def answer_statements(text: str) -> list[Statement]:
    """The answer statements in `text` (a completion or its thinking), with their line spans."""
    out = []
    for m in ANSWER_STATEMENT.finditer(text):
        a = text.rfind("\n", 0, m.start()) + 1
        b = text.find("\n", m.end())
        out.append(Statement(a, len(text) if b < 0 else b, int(m.group(1))))
    return out


def task_from_problem(problem: str) -> Task:
    """Rebuild a Task from its problem string (e.g. to regenerate a reference trace)."""
    from rearl.testbed.tasks import parse_problem

    ops = parse_problem(problem)
    lv = level_of(ops)
    if lv is None:
        raise ValueError(f"{problem!r} fits no level")
    return Task(problem.split("Question: ")[-1].strip(), str(sum(ops)), lv, ops)
