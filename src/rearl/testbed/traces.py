"""R1-style overthinking traces for the toy world (v2), the SFT data of the toy reasoning model.

A trace is a completion that follows the prompt ``<eos>Q : {problem} = ?\n<think>\n``:

1. a first pass, column by column from the right, in paragraphs of a column or two. Each column
   adds its digits one at a time ("xb3 + yb8 = 11 , + zb6 = 17"), an incoming carry is added with a
   "but" ("but the carry 1 makes it 18"), and some columns get a quick check of their digit sum
   ("Wait , let me check : 3 + 8 = 11 , yes ."). Then the answer statement, its own paragraph;
2. on hard levels, unless the trace skips it (`Level.skip_check`), a real re-check: the columns
   again, operands in reverse order, carries included, then either "It matches ..." or "But X does
   not match Y ..." and the corrected answer. The first pass of a hard level passes a carry of 2 on
   as 1 (`Level.slip`: always), so this check is what makes the answer right whenever a column
   reaches 20, and it cannot be done by copying the first pass;
3. 0-5 redundant re-checks ("echoes") that restate what is already known, each its own paragraph,
   opening with one reflection keyword (wait / but / alternatively / check / hmm ... but);
4. ``\n</think>\n\n\boxed{N}``.

Why this shape, measured against real R1-distill traces: docs/testbed.md#the-world.

Text conventions, which the tokenizer relies on to decode exactly: tokens are separated by one
space, numbers are written without spaces, lines are joined by a bare ``\n`` and parts by a blank
line. Every part is long enough (>= 32 tokens, `PART_TOKENS`) for the docs/method.md#paragraphs
paragraph splitter to close it on its own, so columns, the answer statement, the check and each
echo land in different paragraphs.
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


def column_line(col: int, here: Sequence[tuple[str, int]], carry: int,
                carry_out: int | None = None) -> tuple[str, int]:
    """One column, its digits added one at a time, then the carry in:
    ``Now column b : xb3 + yb8 = 11 , + zb6 = 17 , but the carry 1 makes it 18 .\nI write 8 in b and
    carry 1 to c .``; returns the text and the column's total. `carry_out` overrides the carry the
    line passes on (a slip)."""
    place = PLACES[col]
    (t0, d0), rest = here[0], here[1:]
    total = d0
    said = f"{t0}{place}{d0}"
    for k, (tag, d) in enumerate(rest):
        total += d
        said += f" {', + ' if k else '+ '}{tag}{place}{d} = {total}"
    if not rest:
        said += f" = {total}"
    if carry:
        total += carry
        said += f" , plus the carry {carry} makes it {total}"
    out = total // 10 if carry_out is None else carry_out
    return f"Now column {place} : {said} .\nI write {total % 10} in {place} and carry {out} to {PLACES[col + 1]} .", total


def add_columns(operands: Sequence[int], *, reverse: bool = False, slip: float = 0.0,
                rng: random.Random | None = None, mid_check: float = 0.0) -> Columns:
    """Column-by-column addition lines (`column_line`), ones first.

    Each operand digit is written with its tag, as in the question. With `slip` > 0 a column whose
    total reaches 20 passes its carry of 2 on as 1 with that probability ("I write 3 in b and carry 1
    to c"): a realistic first-pass error whose result is always wrong by 10^(column + 1). With
    `mid_check` > 0 a column is followed by a quick check of its digit sum with that probability
    (reflection words inside the reasoning: it checks the addition, never the carry, so it cannot
    catch a slip).
    """
    tagged = [(OPERANDS[k], str(x)) for k, x in enumerate(operands)]
    if reverse:
        tagged = tagged[::-1]
    width = max(len(s) for _, s in tagged)
    lines, digits, carries, slipped = [], [], [], []
    carry = 0
    for col in range(width):
        here = [(tag, int(s[-1 - col])) for tag, s in tagged if col < len(s)]
        digit_sum = sum(d for _, d in here)
        slips = digit_sum + carry >= 20 and slip > 0 and (slip >= 1.0 or (rng is not None and rng.random() < slip))
        if slips:
            slipped.append(col)
        line, total = column_line(col, here, carry, 1 if slips else None)
        if mid_check > 0 and rng is not None and len(here) > 1 and rng.random() < mid_check:
            line += f"\nWait , let me check : {' + '.join(str(d) for _, d in here)} = {digit_sum} , yes ."
        lines.append(line)
        digits.append(total % 10)
        carry = 1 if slips else total // 10
        carries.append(carry)
    col = width
    while carry:  # the leading column holds only the carry
        lines.append(f"Column {PLACES[col]} holds only the carry {carry} , so I write {carry} in {PLACES[col]} .")
        digits.append(carry % 10)
        carry //= 10
        col += 1
    return Columns(lines, digits, carries, slipped)


PART_TOKENS = 32  # the paragraph splitter's minimum (docs/method.md#paragraphs)


def n_tokens(text: str) -> int:
    """The toy tokenizer's token count for generator text: one per word, digit and closing brace."""
    return text.count("\n") + sum(len(re.findall(r"\d|\}|[^\d}]+", w)) for w in text.split())


def in_parts(lines: Sequence[str], head: str = "") -> list[str]:
    """Lines grouped into blank-line separated parts of >= `PART_TOKENS` tokens each (a short tail
    joins the part before it), `head` opening the first one."""
    parts: list[list[str]] = [[head]] if head else [[]]
    for line in lines:
        if n_tokens("\n".join(parts[-1])) >= PART_TOKENS:
            parts.append([])
        parts[-1].append(line)
    if len(parts) > 1 and n_tokens("\n".join(parts[-1])) < PART_TOKENS:
        tail = parts.pop()
        parts[-1] += tail
    return ["\n".join(p) for p in parts]


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


def _echo_digits(c: Columns, ops: Sequence[int], ans: int) -> str:
    return (f"Hmm , but does the answer have the right number of digits ? It has {len(c.digits)} , one for each "
            f"column from {PLACES[len(c.digits) - 1]} down to a .\nSo nothing is missing , and the answer is {ans} .")


def _echo_copy(c: Columns, ops: Sequence[int], ans: int) -> str:
    return (f"Wait , did I copy the numbers right ? They are {' and '.join(map(str, ops))} , as in the question .\n"
            f"I used the same digits , so the answer is {ans} .")


def _echo_last(c: Columns, ops: Sequence[int], ans: int) -> str:
    ones = " + ".join(str(x % 10) for x in ops)
    return (f"Let me check the last digit : {ones} ends in {c.digits[0]} , and the answer ends in {c.digits[0]} too .\n"
            f"The last digit agrees , so the answer is {ans} .")


ECHOES = (_echo_read, _echo_carries, _echo_order, _echo_left, _echo_digits, _echo_copy, _echo_last)


@dataclass
class Trace:
    task: Task
    text: str  # the completion: everything after the prompt, ending with the box
    first_answer: int  # what the first pass stated
    checked: bool  # a real re-check follows the first pass (hard levels, unless skipped)
    slipped: bool  # the first pass forgot a carry (then only the check corrects it)
    n_echoes: int
    parts: int = 0  # blank-line separated parts of the thinking (each one paragraph)

    @property
    def document(self) -> str:
        """Prompt + completion + EOS: one SFT document."""
        return prompt_text(self.task.problem) + self.text + EOS

    @property
    def correct(self) -> bool:
        return self.text.endswith(f"\\boxed{{{self.task.answer}}}")


CHECK_HEADER = "Wait , let me check it again , adding from the bottom number up ."  # opens the real re-check


def statement(c: Columns) -> str:
    return (f"All the columns are added now , and no carry is left over .\n"
            f"So the sum is {c.hinted} , and the answer is {c.value} .")


def make_trace(task: Task, rng: random.Random, sampled: bool = False) -> Trace:
    """One trace. `sampled`: echo counts as the toy LRM should sample them at the evaluation temperature
    (`Level.echo_weights`, what the bands are checked on) instead of the generator's flatter ones."""
    lv = LEVELS[task.level]
    ops = task.operands
    gold = int(task.answer)
    first = add_columns(ops, slip=lv.slip, rng=rng, mid_check=lv.mid_check)
    parts = in_parts(first.lines, "Let me add the columns from the right .") + [statement(first)]
    final = first
    checked = lv.hard and rng.random() >= lv.skip_check
    if checked:
        check = add_columns(ops, reverse=True, rng=rng, mid_check=lv.mid_check)
        if check.value == first.value:
            verdict = (f"This gives {check.hinted} , that is {check.value} ."
                       f"\nIt matches the first result , so the answer is {check.value} .")
        else:  # v5: one line from the first mention of the right sum to its statement (v4 took three)
            verdict = (f"This gives {check.hinted} .\nBut {check.value} does not match {first.value} , so the first "
                       f"pass was wrong , and the answer is {check.value} .")
        parts += in_parts(check.lines, CHECK_HEADER) + [verdict]
        final = check
    n_echo = rng.choices(range(len(lv.echo_weights)), lv.echo_weights if sampled else lv.generator_echo_weights)[0]
    for echo in rng.sample(ECHOES, n_echo):
        parts.append(echo(final, ops, final.value))
    text = "\n\n".join(parts) + f"{THINK_CLOSE}\\boxed{{{final.value}}}"
    assert checked or final.value == gold or first.slipped, (task, final.value)
    return Trace(task, text, first.value, checked, bool(first.slipped), n_echo, len(parts))


def make_traces(tasks: Sequence[Task], seed: int = 0, sampled: bool = False) -> list[Trace]:
    rng = random.Random(f"rearl-testbed-traces:{seed}")
    return [make_trace(t, rng, sampled) for t in tasks]


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
