"""The testbed's report: overthinking next to real traces, the markdown table and targets, the by-level
plot, stage times."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rearl.testbed.config import LABELS
from rearl.testbed.outcomes import _f
from rearl.testbed.tasks import EASY, HARD, LEVELS


def overthinking_markdown(real: dict[str, Any] | None, toy: dict[str, dict[str, Any]]) -> str:
    """Real traces (R1-distill tokenizer) next to the toy's samples (its own tokenizer), `rearl measure`'s
    columns: median [p10, p90] over correct traces."""
    from rearl.eval.overthinking import markdown

    files: dict[str, Any] = {}
    for path, f in (real or {}).get("files", {}).items():
        files[f"real: {path.rsplit('/', 1)[-1]}"] = {**f, "by_level": {}}
    for n, f in toy.items():
        files[f"toy: {LABELS.get(n, n)}"] = f if n == "base" else {**f, "by_level": {}}
    return markdown({"files": files})




def testbed_markdown(stats: dict[str, dict[str, dict[str, Any]]], targets: Sequence[dict[str, Any]],
                     meta: dict[str, Any]) -> str:
    names = list(stats)
    groups = [g for g in [f"L{k}" for k in LEVELS] + ["easy", "hard", "all"] if any(g in stats[n] for n in names)]
    md = ["# REA-RL on the toy world", ""]
    md += [f"Toy LRM: `{meta.get('model')}`; held-out tasks: {meta.get('eval_tasks')} ({meta.get('eval_per_level')} per "
           f"level, levels {', '.join(map(str, LEVELS))}; easy = {', '.join(f'L{k}' for k in EASY)}, hard = "
           f"{', '.join(f'L{k}' for k in HARD)}), sampled at temperature {meta.get('eval_temperature')}. Every method: "
           f"{meta.get('steps')} steps x {meta.get('prompts_per_step')} prompts x G={meta.get('group_size')} from the "
           f"same start; REA-RL's reflection model: {meta.get('reflection_model')}.", ""]
    if names != ["base"]:
        md += ["**The short story: one training seed per method, intervals as if methods were independent.** "
               "It shows every stage working; whether a difference is the method's is for `rearl testbed study` "
               "(several seeds, 1,000 tasks, paired differences; docs/testbed.md#the-study).", ""]
    toy = meta.get("toy_meta") or {}
    sft, probe = toy.get("sft") or {}, toy.get("probe") or {}
    if sft:
        md += [f"Toy LRM build: {toy.get('parameters', 0) / 1e6:.1f}M parameters, {sft.get('document_tokens', 0) / 1e6:.1f}M "
               f"SFT tokens in {sft.get('steps')} steps ({sft.get('seconds')} s), final loss {sft.get('final_loss')}; "
               "greedy probe accuracy " + ", ".join(f"{k} {v:.0f}%" for k, v in probe.items() if k.startswith("L"))
               + ".", ""]
    if sft.get("cut_by_time_cap"):
        md += [f"**WARNING: the toy LRM's SFT hit its time cap after {sft.get('steps')} of {sft.get('planned_steps')} "
               "steps. This is not the seeded model; numbers from this run do not reproduce elsewhere.**", ""]
    for title, key, d in [("Accuracy (%)", "accuracy", 1), ("Tokens per response", "tokens", 0),
                          ("Reflections per response", "reflections", 2),
                          ("Reflection interval (thinking tokens per reflection)", "reflection_interval", 0),
                          ("Reflections after the first correct answer", "reflections_after_first_correct", 2)]:
        md += [f"## {title}", "", "| method | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
        for n in names:
            cells = []
            for g in groups:
                v = stats[n].get(g, {}).get(key)
                c = _f(v, d)
                if key == "accuracy" and v is not None:
                    c += f" ±{stats[n][g]['accuracy_ci95']:.0f}"
                if key == "tokens" and v is not None and n != "base" and "base" in stats and g in stats["base"]:
                    c += f" ({100 * v / stats['base'][g]['tokens']:.0f}%)"
                cells.append(c)
            md.append(f"| {LABELS.get(n, n)} | " + " | ".join(cells) + " |")
        md.append("")
    if all("rechecked" in stats[n].get("hard", {}) for n in names):
        md += ["## The hard levels' re-check", "",
               "Hard-level responses: how many hold the real re-check (the columns again, operands reversed), how "
               "often the first stated answer is wrong (the first pass passes a carry of 2 on as 1), and the accuracy "
               "of each kind. A method that drops the check keeps its accuracy only where the first answer was right.",
               "", "| method | re-checked % | first answer wrong % | acc. when it was wrong % | acc. when it was right % |",
               "|---|---|---|---|---|"]
        for n in names:
            h = stats[n]["hard"]
            md.append(f"| {LABELS.get(n, n)} | " + " | ".join(_f(h.get(k), 0) for k in (
                "rechecked", "first_answer_wrong", "accuracy_first_wrong", "accuracy_first_right")) + " |")
        md.append("")
    md += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in targets:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
        md.append(f"| {t['target']} | {_f(t['measured'])} ({t['detail']}) | {met} |")
    md.append("")
    return "\n".join(md)


def plot_by_level(stats: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    from rearl.eval.report import _pyplot

    plt = _pyplot()
    levels = [f"L{k}" for k in LEVELS]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    w = 0.8 / max(1, len(stats))
    for ax, key, title in zip(axes, ("accuracy", "tokens", "reflections"),
                              ("accuracy (%)", "tokens per response", "reflections per response")):
        for k, (name, st) in enumerate(stats.items()):
            xs = [i + (k - (len(stats) - 1) / 2) * w for i in range(len(levels))]
            ax.bar(xs, [st.get(lv, {}).get(key) or 0 for lv in levels], width=w, label=LABELS.get(name, name))
        ax.set_xticks(range(len(levels)), [f"{lv} ({'easy' if int(lv[1:]) in EASY else 'hard'})" for lv in levels])
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def stage_times(record: dict[str, Any]) -> str:
    rows = ["## Stage times (this machine)", "", "| stage | seconds |", "|---|---|"]
    rows += [f"| {k} | {v.get('seconds')}" + (f" (cached; the build took {v.get('build_seconds')} s)" if v.get("cached") else "")
             + (" (side by side)" if v.get("parallel") else "") + " |" for k, v in record.items()]
    # stages that ran side by side count once, through their group's wall time
    total = sum(v.get("seconds") or 0 for v in record.values() if not v.get("parallel"))
    return "\n".join(rows + [f"| total | {total:.0f} |", ""])
