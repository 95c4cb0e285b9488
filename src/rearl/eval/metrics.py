"""Scoring and metrics of `rearl eval` (docs/evaluation.md), computed from sample records alone.

Every sample is scored at every token budget: its completion ids are cut at the budget and the cut
text is checked again (the authors' "8K of 16K" protocol). Then per-sample scores are aggregated per
benchmark, per difficulty level, and averaged over benchmarks. See `rearl.eval.run` for the layout.

Metrics (per benchmark, per difficulty level, and averaged over benchmarks), at every budget B:
accuracy (mean over samples, = pass@1 averaged over n), pass@n, mean tokens (completion tokens
after the cut, thinking and answer, stop token excluded), mean thinking tokens, reflection interval
(mean over samples of thinking tokens / max(1, reflections), the authors' per-response statistic),
reflection density (reflections per thinking token), outcome efficiency (over correct samples:
tokens up to the first correct answer mention / tokens) and the token ratio against a reference run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from rearl.core.detectors import answer_mentions, correct_mentions
from rearl.core.io import DataError
from rearl.core.reflection import count_reflections
from rearl.core.text import Segmentation, ThinkTags, split_think
from rearl.core.tokens import TokenizedText
from rearl.core.verify import check_completions, default_pool


def _cut(tt: Any, budget: int) -> Any:
    if len(tt) <= budget:
        return tt
    return TokenizedText(tt.text[: tt.ends[budget - 1]], tt.ids[:budget], tt.ends[:budget])


def _first_correct_tokens(tt: Any, gold: str, pool: Any) -> int:
    """Tokens up to (and including the first token of) the first mention of a correct answer."""
    ok = correct_mentions(answer_mentions(tt.text), gold, pool)
    if not ok:  # a correct final answer the mention finder missed: it is at the end
        return len(tt)
    return min(len(tt), tt.tokens_ending_by(ok[0].pos + 1))


def score_samples(records: Sequence[dict[str, Any]], tokenizer: Any, budgets: Sequence[int], *,
                  think_in_prompt: bool = False, regex: str = "authors", extraction: str = "answer_part",
                  pool: Any = None, progress: bool = False, chunk: int = 64) -> list[dict[str, Any]]:
    """Per-sample scores at every budget: the ids are cut at the budget and the cut text re-checked.

    Samples go through in chunks: the verifier pool works on a whole chunk at once, and the token
    offsets of long completions are not all held in memory together.
    """
    pool = pool or default_pool()
    tags = ThinkTags.from_tokenizer(tokenizer)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(records), desc="score", unit="sample")
    rows = []
    for start in range(0, len(records), chunk):
        cuts = []
        for rec in records[start : start + chunk]:
            tt = TokenizedText.from_ids(tokenizer, rec["ids"])
            row = {k: rec.get(k) for k in ("key", "benchmark", "id", "k", "level")}
            row["budgets"] = {}
            for b in budgets:
                c = _cut(tt, b)
                split = split_think(c.text, tags)
                row["budgets"][str(b)] = {
                    "tokens": len(c), "think_tokens": Segmentation(c, split).think_tokens,
                    "reflections": count_reflections(split.think, regex),
                    "finished": bool(rec["finished"]) and len(tt) <= b, "closed": split.closed,
                }
                cuts.append((row["budgets"][str(b)], c, rec["gold"]))
            rows.append(row)
        verdicts = check_completions([c.text for _, c, _ in cuts], [g for *_, g in cuts], mode=extraction, tags=tags,
                                     require_close=think_in_prompt, pool=pool)
        for (e, c, gold), v in zip(cuts, verdicts):
            e["correct"] = v.ok
            e["first_correct_tokens"] = _first_correct_tokens(c, gold, pool) if v.ok else None
        if bar is not None:
            bar.update(len(records[start : start + chunk]))
    if bar is not None:
        bar.close()
    return rows


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def metrics(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-sample scores at one budget."""
    n = len(entries)
    correct = [e for e in entries if e["correct"]]
    think = [e["think_tokens"] for e in entries]
    refl = [e["reflections"] for e in entries]
    return {
        "n": n,
        "accuracy": _mean([100.0 * e["correct"] for e in entries]),
        "mean_tokens": _mean([e["tokens"] for e in entries]),
        "mean_think_tokens": _mean(think),
        "finished": _mean([100.0 * e["finished"] for e in entries]),
        "closed_think": _mean([100.0 * e["closed"] for e in entries]),
        "reflection_interval": _mean([t / max(1, r) for t, r in zip(think, refl)]),
        "reflection_interval_pooled": sum(think) / sum(refl) if sum(refl) else None,
        "reflection_density": _mean([r / t if t else 0.0 for t, r in zip(think, refl)]),
        "n_correct": len(correct),
        "outcome_efficiency": _mean([e["first_correct_tokens"] / e["tokens"] for e in correct if e["tokens"]]),
    }


_AVERAGED = ("accuracy", "pass_at_n", "mean_tokens", "mean_think_tokens", "reflection_interval", "reflection_density",
             "outcome_efficiency", "token_ratio", "finished")


def summarize(scores: Sequence[dict[str, Any]], budgets: Sequence[int], reference: dict[str, Any] | None = None,
              order: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics per benchmark (and per level where the data has levels) and their mean over benchmarks.

    The average is a plain mean over benchmarks (the paper's "Avg"), for accuracy and token ratio alike.
    """
    names = list(order or dict.fromkeys(s["benchmark"] for s in scores))
    benches: dict[str, Any] = {}
    for name in names:
        rows = [s for s in scores if s["benchmark"] == name]
        if not rows:
            continue
        problems: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            problems.setdefault(str(r["id"]), []).append(r)
        per_budget = {}
        for b in budgets:
            bk = str(b)
            m = metrics([r["budgets"][bk] for r in rows])
            m["pass_at_n"] = _mean([100.0 * any(r["budgets"][bk]["correct"] for r in rs) for rs in problems.values()])
            ref = _ref_tokens(reference, name, bk)
            m["token_ratio"] = 100.0 * m["mean_tokens"] / ref if ref else None
            levels = sorted({r["level"] for r in rows if r.get("level") is not None}, key=_level_sort)
            if levels:
                m["by_level"] = {str(lv): metrics([r["budgets"][bk] for r in rows if r.get("level") == lv]) for lv in levels}
            per_budget[bk] = m
        benches[name] = {"n_problems": len(problems), "samples_per_problem": max(len(v) for v in problems.values()),
                         "n_samples": len(rows), "budgets": per_budget}
    average = {}
    for b in budgets:
        ms = [v["budgets"][str(b)] for v in benches.values()]
        average[str(b)] = {k: _mean([m[k] for m in ms if m.get(k) is not None]) for k in _AVERAGED}
        average[str(b)]["n_benchmarks"] = len(ms)
    return {"budgets": [int(b) for b in budgets], "benchmarks": benches, "average": average}


def _level_sort(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v))


def _ref_tokens(reference: dict[str, Any] | None, bench: str, budget: str) -> float | None:
    if not reference:
        return None
    b = (reference.get("benchmarks") or {}).get(bench, {}).get("budgets", {}).get(budget)
    return b.get("mean_tokens") if b else None


def load_summary(run: str | Path) -> dict[str, Any]:
    p = Path(run)
    p = p / "summary.json" if p.is_dir() else p
    if not p.exists():
        raise DataError(f"{p}: no such file (is {run} a finished `rearl eval` run?)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if "benchmarks" not in data:
        raise DataError(f"{p}: not a `rearl eval` summary (no 'benchmarks')")
    return data


# -- the summary as text ------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


SUMMARY_COLUMNS = (  # (header, key, digits)
    ("acc%", "accuracy", 2), ("pass@n%", "pass_at_n", 2), ("tokens", "mean_tokens", 1),
    ("think", "mean_think_tokens", 1), ("TR%", "token_ratio", 1), ("tok/refl", "reflection_interval", 1),
    ("refl/1k", "reflection_density", 2), ("eff", "outcome_efficiency", 3), ("fin%", "finished", 1),
)
LEGEND = ("acc% = accuracy (mean over samples); pass@n% = problems with a correct sample; tokens / think = mean "
          "completion / thinking tokens after the budget cut; TR% = tokens relative to the reference run; tok/refl = "
          "thinking tokens per reflection (mean over samples); refl/1k = reflections per 1000 thinking tokens; eff = "
          "outcome efficiency (tokens up to the first correct answer / tokens, correct samples); fin% = samples that "
          "ended (EOS) within the budget.")


def summary_rows(summary: dict[str, Any], budget: int | str) -> list[list[str]]:
    """Rows (benchmark, n, then SUMMARY_COLUMNS) for one budget, the average last."""
    bk = str(budget)
    rows = []
    for name, b in summary["benchmarks"].items():
        m = b["budgets"][bk]
        size = f"{b['n_problems']}x{b['samples_per_problem']}"
        rows.append([name, size] + [_cell(m, k, d) for _, k, d in SUMMARY_COLUMNS])
    avg = summary["average"][bk]
    rows.append(["average", str(avg["n_benchmarks"])] + [_cell(avg, k, d) for _, k, d in SUMMARY_COLUMNS])
    return rows


def _cell(m: dict[str, Any], key: str, digits: int) -> str:
    v = m.get(key)
    if key == "reflection_density" and v is not None:
        v = 1000.0 * v
    return _fmt(v, digits)


def summary_markdown(summary: dict[str, Any]) -> str:
    run = summary.get("run", {})
    lines = [f"# Evaluation: {run.get('model', '?')}", ""]
    if run:
        lines += [f"T={run.get('temperature')}, top-p={run.get('top_p')}, max tokens {run.get('max_tokens')}, "
                  f"seed {run.get('seed')}; reference for TR: {summary.get('reference') or 'none'}", "", LEGEND, ""]
    for b in sorted(summary["budgets"], reverse=True):
        lines += [f"## Budget {b} tokens", ""]
        head = ["benchmark", "problems x n"] + [h for h, _, _ in SUMMARY_COLUMNS]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in summary_rows(summary, b)]
        for name, bench in summary["benchmarks"].items():
            lv = bench["budgets"][str(b)].get("by_level")
            if not lv:
                continue
            lines += ["", f"{name} by level:", "",
                      "| level | n | acc % | tokens | think tokens | tokens/refl | refl/1k tok |",
                      "|---|---|---|---|---|---|---|"]
            for level, m in lv.items():
                lines.append(f"| {level} | {m['n']} | {_cell(m, 'accuracy', 2)} | {_cell(m, 'mean_tokens', 1)} | "
                             f"{_cell(m, 'mean_think_tokens', 1)} | {_cell(m, 'reflection_interval', 1)} | "
                             f"{_cell(m, 'reflection_density', 2)} |")
        lines.append("")
    return "\n".join(lines)
