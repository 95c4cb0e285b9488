"""`rearl report`: compare evaluation runs in the paper's table shape, with plots.

Inputs are run directories: `rearl eval` outputs (their ``summary.json``; rescored from
``samples.jsonl`` when the summary is missing) and/or training output directories holding TRL's
``trainer_state.json`` (directly or in their newest ``checkpoint-*``), whose ``log_history`` gives
the training curves. Writes ``report.md``, ``report.json`` and PNGs into the output directory.

Token ratios are recomputed here against one reference run (``--reference``, default: the first
evaluation run), per benchmark; "Avg TR" is their plain mean over benchmarks, like "Avg Acc" (how the
paper averaged TR is not known, docs/evaluation.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rearl.core.io import DataError, write_json_atomic, write_text_atomic

DISPLAY = {"gsm8k": "GSM8K", "math500": "MATH500", "gaokao2023en": "Gaokao23", "amc23": "AMC23", "aime24": "AIME24",
           "aime25": "AIME25", "olympiadbench": "OlympiadBench", "minerva": "Minerva", "deepscaler_amc": "AMC (DeepScaleR)",
           "heldout": "held-out toy tasks (rearl testbed)"}
# log_history keys worth plotting for a REA-RL run: rewards, lengths, revision/cut statistics.
_CURVE_KEYS = re.compile(r"reward|length|revis|trunc|cut|reflect|accuracy|clipped|think_tokens", re.I)
_MAX_PANELS = 12


@dataclass
class Run:
    path: Path
    label: str
    summary: dict[str, Any] | None = None  # evaluation summary
    log_history: list[dict[str, Any]] = field(default_factory=list)  # training logs
    trainer_state: Path | None = None


def find_trainer_state(d: Path) -> Path | None:
    """`d/trainer_state.json`, else the one in the newest `checkpoint-N` below `d`."""
    if (d / "trainer_state.json").exists():
        return d / "trainer_state.json"
    found = [p for p in d.glob("**/checkpoint-*/trainer_state.json") if len(p.relative_to(d).parts) <= 4]
    if not found:
        return None

    def step(p: Path) -> int:
        m = re.search(r"checkpoint-(\d+)$", p.parent.name)
        return int(m.group(1)) if m else -1

    return max(found, key=step)


def load_run(path: str | Path, label: str | None = None) -> Run:
    from rearl.eval.run import load_summary, score_run

    d = Path(path)
    if not d.is_dir():
        raise DataError(f"{d}: not a directory")
    run = Run(d, label or d.name)
    if (d / "summary.json").exists():
        run.summary = load_summary(d)
    elif (d / "samples.jsonl").exists() and (d / "config.json").exists():
        run.summary = score_run(d)
    ts = find_trainer_state(d)
    if ts is not None:
        try:
            state = json.loads(ts.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{ts}: invalid JSON ({e.msg} at line {e.lineno})") from None
        run.log_history = [h for h in state.get("log_history") or [] if isinstance(h, dict)]
        run.trainer_state = ts
    if run.summary is None and ts is None:
        raise DataError(f"{d}: neither an evaluation run (summary.json or samples.jsonl) nor a training run "
                        "(trainer_state.json)")
    return run


def _labels(paths: Sequence[str | Path], labels: Sequence[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(paths):
            raise ValueError(f"{len(labels)} labels for {len(paths)} runs")
        return list(labels)
    names = [Path(p).resolve().name for p in paths]
    # Same-named runs from different parents: add the parent to tell them apart.
    return [f"{Path(p).resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _get(summary: dict[str, Any], bench: str, budget: int, key: str) -> float | None:
    b = summary["benchmarks"].get(bench, {}).get("budgets", {}).get(str(budget))
    return None if b is None else b.get(key)


def comparison(runs: Sequence[Run], reference: dict[str, Any], budget: int, benches: Sequence[str]) -> list[dict[str, Any]]:
    """Per run at one budget: accuracy, tokens and token ratio per benchmark, and their averages."""
    rows = []
    for r in runs:
        s = r.summary
        acc = {b: _get(s, b, budget, "accuracy") for b in benches}
        tokens = {b: _get(s, b, budget, "mean_tokens") for b in benches}
        tr = {}
        for b in benches:
            ref = _get(reference, b, budget, "mean_tokens")
            tr[b] = 100.0 * tokens[b] / ref if tokens[b] is not None and ref else None
        rows.append({
            "run": r.label, "path": str(r.path), "budget": budget, "accuracy": acc, "mean_tokens": tokens,
            "token_ratio": tr,
            "reflection_interval": {b: _get(s, b, budget, "reflection_interval") for b in benches},
            "outcome_efficiency": {b: _get(s, b, budget, "outcome_efficiency") for b in benches},
            "avg_accuracy": _mean([v for v in acc.values() if v is not None]),
            "avg_token_ratio": _mean([v for v in tr.values() if v is not None]),
            "missing": [b for b in benches if acc[b] is None],
        })
    return rows


def _f(v: Any, digits: int = 2, suffix: str = "") -> str:
    return "-" if v is None else f"{v:.{digits}f}{suffix}"


def markdown_tables(rows: Sequence[dict[str, Any]], benches: Sequence[str], budget: int, ref_label: str) -> str:
    names = [DISPLAY.get(b, b) for b in benches]
    out = [f"### Accuracy (%), budget {budget} tokens", "",
           "| Method | " + " | ".join(names) + " | Avg Acc | Avg TR |", "|---" * (len(benches) + 3) + "|"]
    for r in rows:
        mark = " *" if r["missing"] else ""
        out.append(f"| {r['run']}{mark} | " + " | ".join(_f(r["accuracy"][b]) for b in benches)
                   + f" | {_f(r['avg_accuracy'])} | {_f(r['avg_token_ratio'], 1, '%')} |")
    out += ["", f"TR: mean tokens relative to `{ref_label}` at this budget, per benchmark; Avg = plain mean over "
            "benchmarks." + (" * = some benchmarks missing; averaged over the rest."
                             if any(r["missing"] for r in rows) else ""),
            "", f"### Mean tokens (token ratio), budget {budget} tokens", "",
            "| Method | " + " | ".join(names) + " |", "|---" * (len(benches) + 1) + "|"]
    for r in rows:
        cells = ["-" if r["mean_tokens"][b] is None else f"{r['mean_tokens'][b]:.0f} ({_f(r['token_ratio'][b], 1, '%')})"
                 for b in benches]
        out.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    out += ["", f"### Reflection interval (thinking tokens per reflection) / outcome efficiency, budget {budget} tokens",
            "", "| Method | " + " | ".join(names) + " |", "|---" * (len(benches) + 1) + "|"]
    for r in rows:
        cells = [f"{_f(r['reflection_interval'][b], 1)} / {_f(r['outcome_efficiency'][b], 3)}" for b in benches]
        out.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# -- plots ------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, plt: Any, w: float = 4.0, h: float = 3.2):
    """A figure with n panels, three per row; also returns the unused cells (turned off)."""
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n]), list(axes.flat[n:])


def plot_accuracy_vs_tokens(runs: Sequence[Run], benches: Sequence[str], budgets: Sequence[int], path: Path) -> None:
    """One panel per benchmark (and the average): a point per run at the main budget, hollow points
    at the smaller budgets, joined per run."""
    plt = _pyplot()
    panels = list(benches) + (["average"] if len(benches) > 1 else [])
    fig, axes, spare = _grid(len(panels), plt)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    main = max(budgets)
    for ax, b in zip(axes, panels):
        for i, r in enumerate(runs):
            pts = []
            for bud in sorted(budgets):
                if b == "average":
                    m = r.summary["average"].get(str(bud)) or {}
                    x, y = m.get("mean_tokens"), m.get("accuracy")
                else:
                    x, y = _get(r.summary, b, bud, "mean_tokens"), _get(r.summary, b, bud, "accuracy")
                if x is not None and y is not None:
                    pts.append((bud, x, y))
            if not pts:
                continue
            c = colors[i % len(colors)]
            ax.plot([p[1] for p in pts], [p[2] for p in pts], "-", color=c, alpha=0.4, lw=1)
            for bud, x, y in pts:
                ax.plot(x, y, "o", ms=8, color=c, mfc=c if bud == main else "white",
                        label=r.label if bud == main else None)
        ax.set_title(DISPLAY.get(b, b))
        ax.set_xlabel("mean tokens per response")
        ax.set_ylabel("accuracy (%)")
        lo, hi = ax.get_ylim()
        if hi - lo < 4:  # equal accuracies: a readable window instead of matplotlib's tiny one
            lo, hi = (lo + hi) / 2 - 5, (lo + hi) / 2 + 5
        ax.set_ylim(max(lo, -2), min(hi, 102))
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}  # runs can miss benchmarks: collect every panel's entries
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    handles, labels = list(legend.values()), list(legend)
    note = f"filled: {main}-token budget"
    if len(budgets) > 1:
        note += f"; hollow: {', '.join(map(str, sorted(budgets)[:-1]))}"
    if spare:  # an empty cell holds the legend
        spare[0].legend(handles, labels, loc="center", title=note, frameon=False)
        fig.tight_layout()
    else:
        # about two entries fit under each 4-inch panel; the legend's rows decide the space it needs
        ncol = max(1, min(len(labels), 2 * min(3, len(panels))))
        legend_rows = -(-len(labels) // ncol) + 1  # + the title
        fig.legend(handles, labels, loc="lower center", ncol=ncol, title=note, frameon=False)
        fig.tight_layout(rect=(0, min(0.5, 0.3 * legend_rows / fig.get_figheight()), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_interval_by_level(runs: Sequence[Run], budget: int, path: Path) -> list[str]:
    """Reflection interval per difficulty level, a line per run; returns the benchmarks plotted."""
    benches = []
    for r in runs:
        for b, v in r.summary["benchmarks"].items():
            if (v["budgets"].get(str(budget)) or {}).get("by_level") and b not in benches:
                benches.append(b)
    if not benches:
        return []
    plt = _pyplot()
    fig, axes, _ = _grid(len(benches), plt, w=5.0)
    for ax, b in zip(axes, benches):
        for r in runs:
            lv = ((r.summary["benchmarks"].get(b) or {}).get("budgets", {}).get(str(budget)) or {}).get("by_level")
            if not lv:
                continue
            xs = [k for k, m in lv.items() if m.get("reflection_interval") is not None]
            ax.plot(xs, [lv[k]["reflection_interval"] for k in xs], "o-", label=r.label)
        ax.set_title(f"{DISPLAY.get(b, b)}, budget {budget}")
        ax.set_xlabel("difficulty level")
        ax.set_ylabel("thinking tokens per reflection")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return benches


# What a reader looks at first; then everything else that matches _CURVE_KEYS, alphabetically.
# The length first: `lengths/samples/mean` (the policy's own samples, rearl.train.trainer._log_lengths); older
# runs only have TRL's `completions/mean_length`, which counts a dropped revision as 0 tokens.
_FIRST = ("lengths/samples/mean", "completions/mean_length", "rewards_raw/accuracy/mean", "completions/think_tokens",
          "reflection/density", "revision/tokens_saved", "revision/accept_rate", "revision/accuracy", "reward")
# min/max/terminated variants of the length: noise next to the mean
_SKIP = re.compile(r"(min|max)_(terminated_)?length$|mean_terminated_length$|std$|^lengths/.*/(min|max|finished_\w+)$")


def curve_keys(history: Sequence[dict[str, Any]]) -> set[str]:
    """The numeric logged keys worth a panel (plot_training orders and caps them)."""
    return {k for h in history for k, v in h.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and _CURVE_KEYS.search(k) and not _SKIP.search(k)}


def moving_average(ys: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last `window` points (fewer at the start)."""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_training(runs: Sequence[Run], path: Path) -> list[str]:
    """Reward, length and revision metrics against the step, one panel per logged key."""
    train = [r for r in runs if r.log_history]
    found = set().union(*(curve_keys(r.log_history) for r in train))
    if "lengths/samples/mean" in found:
        found.discard("completions/mean_length")  # deflated by dropped revisions: the true length is plotted
    keys = [k for k in _FIRST if k in found] + sorted(found - set(_FIRST))
    keys = keys[:_MAX_PANELS]
    if not keys:
        return []
    plt = _pyplot()
    fig, axes, _ = _grid(len(keys), plt)
    for ax, k in zip(axes, keys):
        for c, r in enumerate(train):
            pts = [(h.get("step", i), h[k]) for i, h in enumerate(r.log_history) if isinstance(h.get(k), (int, float))]
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            # one colour per run in every panel (a run that lacks a key must not shift the others' colours);
            # per-step values are noisy with small batches: faint raw line, bold moving average
            ax.plot(xs, ys, "-", lw=0.6, alpha=0.3, color=f"C{c}")
            ax.plot(xs, moving_average(ys, max(1, len(ys) // 10)), "-", lw=1.6, color=f"C{c}", label=r.label)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return keys


# -- the report -----------------------------------------------------------------------------------
def make_report(paths: Sequence[str | Path], out: str | Path, reference: str | Path | None = None,
                labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Write report.md, report.json and the PNGs for the runs in `paths`; return report.json's content."""
    from rearl.eval.benchmarks import BENCHMARKS
    from rearl.eval.run import load_summary

    if not paths:
        raise ValueError("no runs to report on")
    runs = [load_run(p, lab) for p, lab in zip(paths, _labels(paths, labels))]
    evals = [r for r in runs if r.summary is not None]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"runs": [{"label": r.label, "path": str(r.path), "evaluation": r.summary is not None,
                                        "trainer_state": str(r.trainer_state) if r.trainer_state else None} for r in runs],
                              "tables": {}, "plots": {}}
    md = ["# rearl report", "", "Runs: " + ", ".join(f"`{r.label}` ({r.path})" for r in runs), ""]
    if evals:
        ref = load_summary(reference) if reference else evals[0].summary
        ref_label = str(reference) if reference else evals[0].label
        present = {b for r in evals for b in r.summary["benchmarks"]}
        benches = [b for b in BENCHMARKS if b in present] + sorted(present - set(BENCHMARKS))
        budgets = sorted({int(b) for r in evals for b in r.summary["budgets"]}, reverse=True)
        result["reference"] = ref_label
        md += ["## Accuracy and token ratio", ""]
        for bud in budgets:
            rows = comparison(evals, ref, bud, benches)
            result["tables"][str(bud)] = rows
            md += [markdown_tables(rows, benches, bud, ref_label)]
        plot_accuracy_vs_tokens(evals, benches, budgets, out / "accuracy_vs_tokens.png")
        result["plots"]["accuracy_vs_tokens"] = "accuracy_vs_tokens.png"
        md += ["## Plots", "", "![accuracy vs tokens](accuracy_vs_tokens.png)", ""]
        levels = plot_interval_by_level(evals, budgets[0], out / "reflection_interval_by_level.png")
        if levels:
            result["plots"]["reflection_interval_by_level"] = "reflection_interval_by_level.png"
            md += ["![reflection interval by level](reflection_interval_by_level.png)", ""]
        else:
            md += ["No run has per-level data (MATH500 has levels 1-5): no reflection-interval-by-level plot.", ""]
    else:
        md += ["No evaluation runs given: no tables.", ""]
    keys = plot_training(runs, out / "training_curves.png")
    if keys:
        result["plots"]["training_curves"] = "training_curves.png"
        md += ["## Training", "", f"Logged metrics: {', '.join(f'`{k}`' for k in keys)}.", "",
               "![training curves](training_curves.png)", ""]
    else:
        md += ["No run has a trainer_state.json with reward/length/revision logs: no training curves.", ""]
    write_text_atomic(out / "report.md", "\n".join(md))
    write_json_atomic(out / "report.json", result)
    return result
