"""What the testbed measures from its runs: every held-out sample analysed, per-level statistics, the
reflection model's share of a step, and the testbed targets checked one by one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rearl.testbed.config import LABELS
from rearl.testbed.tasks import EASY, HARD, LEVELS


def _f(v: Any, d: int = 1) -> str:
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))


# -- the testbed's own analysis ------------------------------------------------------------------------------
def task_records(eval_dir: Path, data: Path) -> dict[str, Any]:
    """Every held-out sample of an evaluation run, analysed (`rearl.testbed.stats.Record`), by sample key."""
    from transformers import AutoTokenizer

    from rearl.core.io import read_jsonl
    from rearl.eval.benchmarks import load_benchmark
    from rearl.testbed.stats import analyse
    from rearl.testbed.traces import task_from_problem

    summary = json.loads((eval_dir / "summary.json").read_text())
    tok = AutoTokenizer.from_pretrained(summary["run"]["tokenizer"])
    budget = str(max(summary["budgets"]))
    correct = {s["key"]: bool(s["budgets"][budget]["correct"]) for _, s in read_jsonl(eval_dir / "scores.jsonl")}
    problems = {p["id"]: p for p in load_benchmark(str(data))}
    out = {}
    for _, rec in read_jsonl(eval_dir / "samples.jsonl"):
        task = task_from_problem(problems[rec["id"]]["problem"])
        out[rec["key"]], _ = analyse(tok, task, rec["ids"], rec["finished"], correct[rec["key"]])
    return out


def level_stats(eval_dir: Path, data: Path) -> dict[str, dict[str, Any]]:
    """Per level (and easy / hard / all): accuracy with its 95% half-width, tokens, reflections per
    response, reflections and tokens after the first correct answer statement (exact for our format)."""
    groups: dict[str, list[Any]] = {}
    for r in task_records(eval_dir, data).values():
        for g in (f"L{r.level}", "easy" if r.level in EASY else "hard", "all"):
            groups.setdefault(g, []).append(r)
    out = {}
    for g, rs in groups.items():
        n = len(rs)
        acc = sum(r.correct for r in rs) / n
        after = [r.reflections_after for r in rs if r.reflections_after is not None]
        tafter = [r.tokens_after for r in rs if r.tokens_after is not None]
        out[g] = {
            "n": n,
            "accuracy": 100 * acc,
            "accuracy_ci95": 100 * 1.96 * math.sqrt(max(acc * (1 - acc), 1e-12) / n),
            "tokens": sum(r.tokens for r in rs) / n,
            "think_tokens": sum(r.think_tokens for r in rs) / n,
            "reflections": sum(r.reflections for r in rs) / n,
            "reflection_interval": sum(r.think_tokens / max(1, r.reflections) for r in rs) / n,
            "reflections_after_first_correct": sum(after) / len(after) if after else None,
            "tokens_after_first_correct": sum(tafter) / len(tafter) if tafter else None,
            "finished": 100 * sum(r.finished for r in rs) / n,
        }
        # the hard levels' mechanism: is the re-check there, and does it matter (first answer wrong)?
        wrong_first = [r for r in rs if not r.first_answer_correct]
        right_first = [r for r in rs if r.first_answer_correct]
        out[g].update({
            "rechecked": 100 * sum(r.checked for r in rs) / n,
            "first_answer_wrong": 100 * len(wrong_first) / n,
            "accuracy_first_wrong": 100 * sum(r.correct for r in wrong_first) / len(wrong_first) if wrong_first else None,
            "accuracy_first_right": 100 * sum(r.correct for r in right_first) / len(right_first) if right_first else None,
        })
    order = [f"L{k}" for k in LEVELS] + ["easy", "hard", "all"]
    return {k: out[k] for k in order if k in out}


def reflection_timing(run_dir: Path) -> dict[str, Any] | None:
    """Median seconds per step spent scoring with the reflection model, and of the whole step (trainer log)."""
    from rearl.eval.report import find_trainer_state

    ts = find_trainer_state(run_dir)
    if ts is None:
        return None
    rows = [h for h in json.loads(ts.read_text()).get("log_history", [])
            if "timing/reflection_s" in h and h.get("step_time")]
    if not rows:
        return None

    from statistics import median_high as med  # sorted(xs)[len(xs) // 2]

    return {"steps": len(rows), "reflection_s": med([h["timing/reflection_s"] for h in rows]),
            "step_s": med([h["step_time"] for h in rows]),
            "share": med([h["timing/reflection_s"] / h["step_time"] for h in rows])}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _diff_ci95(a: dict[str, Any], b: dict[str, Any]) -> float:
    """95% half-width (points) of the difference of two independent accuracies (normal approximation)."""
    pa, pb = a["accuracy"] / 100, b["accuracy"] / 100
    return 100 * 1.96 * math.sqrt(pa * (1 - pa) / a["n"] + pb * (1 - pb) / b["n"])


def check_targets(stats: dict[str, dict[str, dict[str, Any]]], overthinking: dict[str, Any] | None = None,
                  reflector: dict[str, Any] | None = None,
                  timing: dict[str, dict[str, Any] | None] | None = None) -> list[dict[str, Any]]:
    """The testbed issue's targets, measured: each row says what was asked, what was measured, and whether
    it holds (None: not measurable in this run)."""
    base = stats.get("base")
    rows: list[dict[str, Any]] = []
    if base is None:
        return rows

    def add(target: str, value: float | None, ok: bool | None, detail: str) -> None:
        rows.append({"target": target, "measured": value, "met": ok, "detail": detail})

    toy = (overthinking or {}).get("base")
    if toy:  # world v2's bands, measured on the base's held-out samples like the real traces
        b = toy["all"]
        rs = b.get("removable_share") or {}
        med, p10, p90 = rs.get("median"), rs.get("p10"), rs.get("p90")
        add("base: removable overthinking share, median in [0.35, 0.55]", med,
            None if med is None else 0.35 <= med <= 0.55, "share of thinking tokens after the first correct answer")
        add("base: removable share p10 <= 0.05 and p90 >= 0.65", None if p10 is None else p90,
            None if p10 is None else (p10 <= 0.05 and p90 >= 0.65), f"p10 {_f(p10, 2)}, p90 {_f(p90, 2)}")
        lv = toy.get("by_level", {})
        easy = [lv[k]["removable_share"]["median"] for k in lv if int(k) in EASY and lv[k].get("removable_share")]
        hard = [lv[k]["removable_share"]["median"] for k in lv if int(k) in HARD and lv[k].get("removable_share")]
        if easy and hard:
            add("base: more overthinking on easy levels than on hard ones (removable share)", min(easy) - max(hard),
                min(easy) > max(hard), f"easy {', '.join(_f(x, 2) for x in easy)} vs hard {', '.join(_f(x, 2) for x in hard)}")
        db, da = (b.get("density_before") or {}).get("median"), (b.get("density_after") or {}).get("median")
        r = _ratio(db, da)
        add("base: reflection density before / after the first correct answer within a factor of 2", r,
            None if r is None else 0.5 <= r <= 2.0, f"{_f(db)} vs {_f(da)} per 1k thinking tokens")
        pm = (b.get("paragraphs") or {}).get("median")
        add("base: median paragraphs per trace >= 8", pm, None if pm is None else pm >= 8, "the REA-RL splitter")
    e = base.get("easy", {}).get("reflections_after_first_correct")
    add("base overthinks: >= 2 reflections after the first correct answer on easy levels", e,
        None if e is None else e >= 2, "mean over easy samples that state a correct answer")
    rea = stats.get("rea_rl")
    if rea is not None:
        ratio = rea["all"]["tokens"] / base["all"]["tokens"]
        add("REA-RL: mean tokens <= 0.70 x base", ratio, ratio <= 0.70,
            f"{rea['all']['tokens']:.0f} vs {base['all']['tokens']:.0f} tokens (paper: 0.64)")
        ta, tb = rea["all"].get("tokens_after_first_correct"), base["all"].get("tokens_after_first_correct")
        removed = None if ta is None or not tb else 1 - ta / tb
        add("REA-RL: >= 60% of the base's removable overthinking removed", None if removed is None else 100 * removed,
            None if removed is None else removed >= 0.6,
            f"thinking tokens after the first correct answer: {_f(ta, 0)} vs {_f(tb, 0)}")
        d = rea["all"]["accuracy"] - base["all"]["accuracy"]
        add("REA-RL: accuracy >= base - 1 point", d, d >= -1,
            f"{rea['all']['accuracy']:.1f} vs {base['all']['accuracy']:.1f}; 95% interval of the difference "
            f"+-{_diff_ci95(rea['all'], base['all']):.1f}")
        h = _ratio(rea.get("hard", {}).get("reflections"), base.get("hard", {}).get("reflections"))
        add("REA-RL: reflections per response on hard levels >= 80% of base", None if h is None else 100 * h,
            None if h is None else h >= 0.8, "mean reflections per response")
        s = _ratio(rea.get("easy", {}).get("reflections"), base.get("easy", {}).get("reflections"))
        add("REA-RL: reflections per response on easy levels <= 60% of base", None if s is None else 100 * s,
            None if s is None else s <= 0.6, "mean reflections per response")
    ora = stats.get("rea_rl_oracle")
    if rea is not None and ora is not None:
        cut_l, cut_o = 1 - rea["all"]["tokens"] / base["all"]["tokens"], 1 - ora["all"]["tokens"] / base["all"]["tokens"]
        share = None if cut_o <= 0 else cut_l / cut_o
        add("REA-RL with the learned reflector: >= 80% of the oracle-cut REA-RL's token reduction",
            None if share is None else 100 * share, None if share is None else share >= 0.8,
            f"{100 * cut_l:.1f}% vs {100 * cut_o:.1f}% fewer tokens than the base")
        d = rea["all"]["accuracy"] - ora["all"]["accuracy"]
        add("REA-RL with the learned reflector: accuracy within 1 point of the oracle-cut REA-RL", d, d >= -1,
            f"{rea['all']['accuracy']:.1f} vs {ora['all']['accuracy']:.1f}; 95% interval of the difference "
            f"+-{_diff_ci95(rea['all'], ora['all']):.1f}")
    if reflector:
        rows_by = {r["method"]: r for r in reflector["table"]}
        model = next((r for m, r in rows_by.items() if m.startswith("trained model")), None)
        naive = {m: r for m, r in rows_by.items() if m.startswith(("no Result", "first reflection", "fixed ratio"))}
        if model is not None and naive and model.get("exact") is not None:
            best_name, best = max(naive.items(), key=lambda kv: kv[1].get("exact") or 0)
            margin = model["exact"] - (best.get("exact") or 0)
            add("reflector: Normal-cut agreement with the teacher beats every naive baseline by >= 10 points", margin,
                margin >= 10, f"{model['exact']:.1f}% vs {best.get('exact') or 0:.1f}% ({best_name})")
    for m, t in (timing or {}).items():
        if t:
            add(f"reflector: scoring <= 25% of the RL step ({LABELS.get(m, m)})", 100 * t["share"], t["share"] <= 0.25,
                f"{t['reflection_s']:.2f} s of {t['step_s']:.1f} s, median over {t['steps']} steps")
    gl = stats.get("grpo_len")
    if gl is not None and "hard" in gl and "hard" in base:
        h = _ratio(gl["hard"].get("reflections"), base["hard"].get("reflections"))
        dh = gl["hard"]["accuracy"] - base["hard"]["accuracy"]
        ci = _diff_ci95(gl["hard"], base["hard"])
        shown = (h is not None and h < 0.5) or dh < -ci
        add("GRPO+len: the paper's failure mode beyond noise (hard-level reflections < 50% of base, or hard "
            "accuracy below base by more than the interval)", None if h is None else 100 * h, shown,
            f"hard reflections {_f(None if h is None else 100 * h)}% of base; hard accuracy {dh:+.1f} points "
            f"(95% interval of the difference +-{ci:.1f})")
    return rows
