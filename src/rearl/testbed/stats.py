"""What the toy LRM does, by level: accuracy, overthinking, and what its re-checks are worth.

For each sampled completion:

* `correct`: rearl's verifier on the decoded text (last box after `</think>`);
* the first stated answer and the first *correct* statement, parsed exactly from our trace format
  (`traces.answer_statements`), with the reflections (rearl's regex) and thinking tokens after it:
  the overthinking REA-RL is meant to trim;
* `no_check_correct`: the model's answer when its thinking is cut right after the first stated
  answer, `\\n</think>\\n\\n` is forced and the model writes the box itself (greedy), i.e. what a
  policy that never re-checks would score. The gap to `correct` is what checking is worth.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from rearl.core.reflection import count_reflections
from rearl.core.text import split_think
from rearl.core.tokens import TokenizedText
from rearl.testbed.tasks import OPERANDS, PLACES, Task
from rearl.testbed.traces import CHECK_HEADER, THINK_CLOSE, answer_statements

_COLUMN = re.compile(r"^Now column ([a-h]) : (.*) \.\nI write (\d+) in \1 and carry (\d+) to [a-h] \.", re.M)
_CARRY_IN = re.compile(r"^plus the carry (\d+) makes it (\d+)$")


@dataclass
class Record:
    level: int
    problem: str
    answer: str
    text: str
    tokens: int
    finished: bool
    correct: bool
    think_tokens: int
    reflections: int
    first_answer: int | None  # the first stated answer, None if the model stated none
    first_correct_at: int | None  # thinking tokens up to the end of the first correct statement
    reflections_after: int | None  # reflections after the first correct statement (in the thinking)
    tokens_after: int | None  # thinking tokens after it
    read_errors: int = 0  # tagged digits in the column lines that differ from the question's
    reads: int = 0
    sum_errors: int = 0  # column lines whose stated sum is not the sum of their own terms
    columns: int = 0
    no_check_correct: bool | None = None
    checked: bool = False  # the thinking holds the real re-check (`traces.CHECK_HEADER`)

    @property
    def first_answer_correct(self) -> bool:
        return self.first_answer is not None and str(self.first_answer) == self.answer


def column_errors(text: str, operands: Sequence[int]) -> tuple[int, int, int, int]:
    """(reads, read errors, column lines, sum errors) over every column of a completion.

    Separates the two skills the model needs: copying the right digit (a lookup) and adding. A
    column counts as a sum error when any running sum, the carry-in total, the written digit or the
    carry out is not what its own terms give; a carry of 2 passed on as 1 is the hard levels' designed
    slip (`tasks.Level.slip`), not a sum error.
    """
    truth = {OPERANDS[k] + PLACES[i]: int(ch) for k, x in enumerate(operands) for i, ch in enumerate(reversed(str(x)))}
    reads = bad_reads = lines = bad_sums = 0
    for m in _COLUMN.finditer(text):
        place, total, ok = m.group(1), 0, True
        for piece in m.group(2).split(" , "):
            for tag, d in re.findall(rf"\b([{OPERANDS}]){place}(\d)\b", piece):
                reads += 1
                bad_reads += int(d) != truth.get(tag + place)
                total += int(d)
            carry = _CARRY_IN.match(piece)
            if carry:
                total += int(carry.group(1))
                stated = int(carry.group(2))
            else:
                eq = re.search(r"= (\d+)$", piece)
                stated = int(eq.group(1)) if eq else total
            ok &= stated == total
        ok &= int(m.group(3)) == total % 10 and int(m.group(4)) in (total // 10, 1 if total >= 20 else -1)
        lines += 1
        bad_sums += not ok
    return reads, bad_reads, lines, bad_sums


def analyse(tokenizer: Any, task: Task, ids: Sequence[int], finished: bool, correct: bool) -> tuple[Record, int | None]:
    """A record for one completion, and the number of its tokens up to the first stated answer."""
    tt = TokenizedText.from_ids(tokenizer, [i for i in ids if i != tokenizer.eos_token_id])
    text = tt.text
    split = split_think(text)
    think_end_tok = tt.tokens_ending_by(split.think_end)
    think_tokens = think_end_tok - tt.token_at_or_after(split.think_start)
    stmts = [s for s in answer_statements(text) if s.end <= split.think_end]
    first = stmts[0] if stmts else None
    good = next((s for s in stmts if str(s.value) == task.answer), None)
    rec = Record(
        level=task.level, problem=task.problem, answer=task.answer, text=text, tokens=len(ids), finished=finished,
        correct=correct, think_tokens=think_tokens, reflections=count_reflections(split.think),
        first_answer=first.value if first else None,
        first_correct_at=tt.tokens_ending_by(good.end) if good else None,
        reflections_after=count_reflections(text[good.end : split.think_end]) if good else None,
        tokens_after=max(0, think_end_tok - tt.tokens_ending_by(good.end)) if good else None,
    )
    rec.reads, rec.read_errors, rec.columns, rec.sum_errors = column_errors(split.think, task.operands)
    rec.checked = CHECK_HEADER in split.think
    return rec, (tt.tokens_ending_by(first.end) if first else None)


def _policy(model: Any, batch_size: int):
    """A model directory's sampler: the lean decoder (the toy is a plain Llama; rearl.backends.lean), or the
    policy object passed in."""
    from rearl.backends.hf import HFPolicy
    from rearl.backends.lean import LeanPolicy

    if isinstance(model, HFPolicy):  # LeanPolicy is one too
        return model
    return LeanPolicy(str(model), batch_size=batch_size)


def sample_records(model: Any, tasks: Sequence[Task], *, temperature: float = 0.0, max_new_tokens: int = 512,
                   seed: int = 0, batch_size: int = 32, no_check: bool = True, progress: bool = True) -> list[Record]:
    """Sample one completion per task (through the chat template, as rearl's eval does) and analyse it.

    `model` is a model directory, an `HFPolicy` or a `LeanPolicy`.
    """
    from tqdm.auto import tqdm

    from rearl.core.prompts import policy_prompt_ids
    from rearl.core.verify import check_completions

    pol = _policy(model, batch_size)
    tok = pol.tokenizer
    prompts = [policy_prompt_ids(tok, t.problem) for t in tasks]
    gens = []
    for k in tqdm(range(0, len(tasks), batch_size), desc=f"sampling T={temperature}", disable=not progress):
        gens += pol.generate(prompts[k : k + batch_size], max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=1.0, top_k=50, seed=seed + k)
    verdicts = check_completions([g.text for g in gens], [t.answer for t in tasks])
    out, cuts = [], []
    for t, g, v in zip(tasks, gens, verdicts):
        rec, cut = analyse(tok, t, g.ids, g.finished, bool(v))
        out.append(rec)
        cuts.append(cut)
    if no_check:
        _no_check(pol, tasks, prompts, gens, cuts, out, batch_size)
    return out


def _no_check(pol: Any, tasks: Sequence[Task], prompts: list[list[int]], gens: list[Any], cuts: list[int | None],
              out: list[Record], batch_size: int) -> None:
    """Cut each completion after its first stated answer, force the end of thinking, let the model box."""
    from rearl.core.verify import check_completions

    tok = pol.tokenizer
    close = tok(THINK_CLOSE, add_special_tokens=False)["input_ids"]
    todo = [i for i, c in enumerate(cuts) if c is not None]
    prefixes = [list(gens[i].ids[: cuts[i]]) + close for i in todo]
    finals = pol.generate([prompts[i] + p for i, p in zip(todo, prefixes)], max_new_tokens=16, temperature=0.0,
                          top_k=50) if todo else []
    texts = [tok.decode(p + f.ids, skip_special_tokens=False) for p, f in zip(prefixes, finals)]
    verdicts = check_completions(texts, [tasks[i].answer for i in todo]) if todo else []
    for rec in out:
        rec.no_check_correct = False  # no stated answer: nothing to stop at
    for i, v in zip(todo, verdicts):
        out[i].no_check_correct = bool(v)


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(sum(xs) / len(xs), 3) if xs else None


def summarize(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Per level (and "all"): rates in %, means over the completions that have the quantity."""
    by: dict[str, list[Record]] = {}
    for r in records:
        by.setdefault(f"L{r.level}", []).append(r)
    by["all"] = list(records)
    table = {}
    for name, rs in sorted(by.items()):
        n = len(rs)
        pct = lambda k: round(100.0 * sum(bool(k(r)) for r in rs) / n, 1)  # noqa: E731
        table[name] = {
            "n": n,
            "accuracy": pct(lambda r: r.correct),
            "no_check_accuracy": (pct(lambda r: r.no_check_correct)
                                  if all(r.no_check_correct is not None for r in rs) else None),
            "first_answer_accuracy": pct(lambda r: r.first_answer_correct),
            "fixed_by_check": pct(lambda r: r.correct and not r.first_answer_correct),
            "broken_by_check": pct(lambda r: r.first_answer_correct and not r.correct),
            "finished": pct(lambda r: r.finished),
            "mean_tokens": _mean([r.tokens for r in rs]),
            "mean_think_tokens": _mean([r.think_tokens for r in rs]),
            "mean_reflections": _mean([r.reflections for r in rs]),
            "has_correct_statement": pct(lambda r: r.first_correct_at is not None),
            "reflections_after_first_correct": _mean([r.reflections_after for r in rs]),
            "tokens_after_first_correct": _mean([r.tokens_after for r in rs]),
            "digit_read_error": round(100.0 * sum(r.read_errors for r in rs) / max(1, sum(r.reads for r in rs)), 2),
            "column_sum_error": round(100.0 * sum(r.sum_errors for r in rs) / max(1, sum(r.columns for r in rs)), 2),
            "share_after_first_correct": _mean(
                [r.tokens_after / r.think_tokens for r in rs if r.tokens_after is not None and r.think_tokens]
            ),
        }
    return table


def measure(model: Any, *, n_per_level: int = 50, levels: Sequence[int] | None = None, seed: int = 1234,
            temperatures: Sequence[float] = (0.0, 0.6), max_new_tokens: int = 512, batch_size: int = 32,
            progress: bool = True) -> dict[str, Any]:
    """The testbed's base measurements: per temperature, the per-level summary (and the records)."""
    from rearl.testbed.tasks import LEVELS, make_tasks

    levels = tuple(levels or LEVELS)
    tasks = make_tasks(n_per_level * len(levels), levels, seed=seed)
    pol = _policy(model, batch_size)
    result: dict[str, Any] = {"n_per_level": n_per_level, "seed": seed, "runs": {}}
    for temp in temperatures:
        recs = sample_records(pol, tasks, temperature=temp, max_new_tokens=max_new_tokens, seed=seed,
                              batch_size=batch_size, progress=progress)
        result["runs"][f"T={temp:g}"] = {"summary": summarize(recs), "records": [asdict(r) for r in recs]}
    return result


def format_table(result: dict[str, Any]) -> str:
    """Markdown: one row per level and temperature."""
    head = ("| run | level | n | acc % | no-check acc % | first-answer acc % | fixed by check % | "
            "tokens | reflections | refl. after 1st correct | tokens after 1st correct |")
    lines = [head, "|" + "---|" * 11]
    for run, body in result["runs"].items():
        for lvl, s in body["summary"].items():
            lines.append(
                f"| {run} | {lvl} | {s['n']} | {s['accuracy']} | {s['no_check_accuracy']} | "
                f"{s['first_answer_accuracy']} | "
                f"{s['fixed_by_check']} | {s['mean_tokens']} | {s['mean_reflections']} | "
                f"{s['reflections_after_first_correct']} | {s['tokens_after_first_correct']} |"
            )
    return "\n".join(lines)
