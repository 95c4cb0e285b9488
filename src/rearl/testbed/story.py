"""`rearl testbed run`: the whole REA-RL story on the toy world, with rearl's real code paths.

Stages, each cached in the run directory (a rerun skips what is finished and resumes the rest):

1. `model`: build (or reuse) the toy overthinking LRM (`toy_model.build_toy_lrm`);
2. `data`: held-out evaluation tasks by level, training tasks, calibration tasks (disjoint);
3. `base_samples`: `rearl eval` of the base model on the calibration tasks at the training
   temperature: the base responses that calibrate T and that the reflection model learns from;
4. `calibrate`: T = p80 of thinking tokens per reflection (docs/method.md#reflection-reward) over those responses;
5. `reflector_toy`: oracle labels (two steps) on those responses, split by problem, full fine-tuning
   of the toy LRM as the reflection model (`toy_reflector`), its quality report against the teacher
   and the naive baselines; side by side with the runs that do not need it. `reflector` (opt-in):
   the same with the embedded SmolLM2 (LoRA);
6. `train/<method>`: GRPO, GRPO + length, REA-RL (cutting with the toy reflector), REA-RL (oracle cut)
   and the ablations with `rearl train` (configs written as YAML next to each run), the same start,
   data, seed and budget for every method;
7. `eval/<method>`: `rearl eval` of the base and of every trained policy on the held-out tasks;
8. `report`: `rearl report` (paper table, plots) plus the testbed's own table: accuracy, tokens
   and reflections by difficulty, overthinking after the first correct answer, and the issue's
   targets checked one by one.

Where each part lives: the settings and methods in `config.py`, the stages in `stages.py`, the
statistics and targets in `outcomes.py`, the report in `report.py`; this file runs them in order.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from rearl.testbed.config import LABELS, METHODS, REFLECTION_MODELS, StoryConfig, quick_config  # noqa: F401
from rearl.testbed.outcomes import (  # noqa: F401
    _diff_ci95,
    check_targets,
    level_stats,
    reflection_timing,
    task_records,
)
from rearl.testbed.report import (  # noqa: F401
    overthinking_markdown,
    plot_by_level,
    stage_times,
    testbed_markdown,
)
from rearl.testbed.stages import (  # noqa: F401
    Stages,
    _eval_config,
    _evaluate,
    calibrate_traces,
    check_probe,
    make_data,
    measure_files,
    real_trace_files,
    run_side_by_side,
    run_stage,
    run_training,
    train_and_eval_reflector,
    train_seed,
    train_settings,
    write_reference_traces,
    write_trace_file,
)
from rearl.testbed.tasks import EASY, HARD, LEVELS  # noqa: F401

# -- the story -------------------------------------------------------------------------------------------
def run_story(cfg: StoryConfig, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; returns the testbed summary (also in <out>/testbed.json)."""
    from rearl.core.io import write_json_atomic, write_text_atomic
    from rearl.testbed.toy_model import build_toy_lrm, load_meta

    # absolute: stages record model and tokenizer paths under it, and a relative one ("runs/testbed", as
    # make demo passes) made the report fail from any other working directory (measured)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    old_cfg = out / "story.json"
    settings = asdict(cfg)
    if old_cfg.exists():
        prev = json.loads(old_cfg.read_text())
        # settings that do not change finished stages' results may differ between runs
        free = ("out", "threads", "methods", "train_reflector", "jobs", "real_traces")
        changed = {k for k in settings if k not in free and prev.get(k) != settings[k]}
        if changed:
            raise ValueError(f"{out} holds a testbed run with other settings ({', '.join(sorted(changed))}); "
                             "use another --out or delete it")
    write_json_atomic(old_cfg, settings)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    st = Stages(out, log)

    # 1. the toy LRM: cached across runs by its own configuration hash
    t0 = time.monotonic()
    # nothing else runs during the build: all cores (the load average right after `pip install` would
    # make pick_threads() choose one, and one thread builds at 58% of the speed of two, measured)
    model = str(build_toy_lrm(cfg.toy_cache_dir, quick=cfg.quick, seed=cfg.seed, sft_tokens=cfg.toy_sft_tokens,
                              budget_minutes=cfg.toy_budget_minutes, progress=progress,
                              threads=cfg.threads or os.cpu_count() or 1))
    if "model" not in st.record:
        built = load_meta(model).get("build_seconds")
        took = round(time.monotonic() - t0, 1)
        # a build reused from the cache took its time elsewhere: record what it cost when it was made
        st.record["model"] = {"seconds": took, "path": model, "cached": took < 0.5 * (built or 0), "build_seconds": built}
        write_json_atomic(st.path, st.record)
    log(f"[testbed] toy LRM: {model}")
    toy = load_meta(model)
    if toy.get("sft", {}).get("cut_by_time_cap"):
        log(f"[testbed] WARNING: the toy LRM's SFT hit its time cap ({toy['sft']['steps']} of "
            f"{toy['sft']['planned_steps']} steps): it is not the seeded model; the report says so too")
    check_probe(toy, cfg.probe_min_accuracy, model)

    d = out / "data"
    heldout = d / "heldout.jsonl"  # make_data writes it last
    st.run("data", heldout, lambda: (d.mkdir(parents=True, exist_ok=True), make_data(cfg, d)))

    # 2. base responses at the training temperature: calibration and reflection-model data
    base_train = out / "base_train_samples"
    st.run("base_samples", base_train / "summary.json", lambda: _evaluate(
        _eval_config(cfg, model, base_train, d / "calibration.jsonl", temperature=cfg.temperature), progress))
    traces = out / "base_traces.jsonl"
    st.run("traces", traces, lambda: write_trace_file(base_train, d / "calibration.jsonl", traces))
    cal_path = out / "calibration.json"
    st.run("calibrate", cal_path, lambda: calibrate_traces(traces, model, cal_path))
    threshold = json.loads(cal_path.read_text())["threshold"]
    log(f"[testbed] reflection threshold T = {threshold:.1f} thinking tokens per reflection (p80 of the base)")

    reflector_dir = out / "reflector"

    def reflector_source() -> Path:
        """The traces the reflection model learns from (written first when they are the reference ones)."""
        if cfg.reflector_data != "reference":
            return traces
        src = out / "reference_traces.jsonl"
        st.run("reference_traces", src, lambda: write_reference_traces(d / "calibration.jsonl", src, cfg.seed))
        return src

    # REA-RL needs its reflection model before RL: the toy one trains side by side with the stages that do not
    # (below); the SmolLM2 one first; the SmolLM2 one, when it is only reported, trains beside the RL runs
    toy_dir = out / "reflector_toy"
    if cfg.reflection_model == "smollm2":
        src = reflector_source()
        st.run("reflector", reflector_dir / "eval.json",
               lambda: train_and_eval_reflector(cfg, model, src, reflector_dir, progress))
    reflector = {"toy": str(toy_dir / "model"), "smollm2": str(reflector_dir / "model"),
                 "oracle": "oracle"}[cfg.reflection_model]

    # 3. RL, and what does not depend on it (the base's evaluation, the reflector when REA-RL uses the
    # oracle); 4. then every policy's evaluation on the held-out tasks
    ev = out / "eval"
    group: list[tuple[str, Path, str, tuple]] = []
    # with the toy reflector: first the reflector beside what does not need it (runs without revision, the base's
    # evaluation), then the runs with revision; each group fills both cores
    later: list[tuple[str, Path, str, tuple]] = []
    if cfg.reflection_model == "toy":
        src = reflector_source()
        group.append(("reflector_toy", toy_dir / "eval.json", "toy_reflector",
                      (model, src, toy_dir, cfg.reflector_toy_steps, cfg.reflector_toy_lr, cfg.seed)))
    for m in cfg.methods:
        run_dir = out / "train" / m
        s = train_settings(cfg, m, model, d / "train.jsonl", threshold, reflector, run_dir)
        item = (f"train/{m}", run_dir / "rearl_run.json", "train", (s, run_dir))
        (later if cfg.reflection_model == "toy" and METHODS[m]["revision"] else group).append(item)
    group.append(("eval/base", ev / "base" / "summary.json", "eval",
                  (_eval_config(cfg, model, ev / "base", heldout, temperature=cfg.eval_temperature),)))
    if cfg.train_reflector and cfg.reflection_model != "smollm2":
        src = reflector_source()
        # the longest stage first, so that the others fill the second core around it
        group.insert(0, ("reflector", reflector_dir / "eval.json", "reflector", (cfg, model, src, reflector_dir)))
    evals = [(f"eval/{m}", ev / m / "summary.json", "eval",
              (_eval_config(cfg, str(out / "train" / m), ev / m, heldout, temperature=cfg.eval_temperature,
                            reference=ev / "base"),)) for m in cfg.methods]
    if cfg.jobs > 1:
        threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.jobs)
        run_side_by_side(st, group, cfg.jobs, threads, out / "logs", progress)
        if later:
            run_side_by_side(st, later, cfg.jobs, threads, out / "logs", progress)
        run_side_by_side(st, evals, cfg.jobs, threads, out / "logs", progress)
    else:
        for name, marker, kind, args in group + later + evals:
            st.run(name, marker, lambda kind=kind, args=args: run_stage(kind, args, cfg.threads, progress))

    names = ["base"] + list(cfg.methods)
    # 5. overthinking of every policy's held-out samples, measured as real traces are (and the real ones)
    ot = out / "overthinking"
    ot.mkdir(exist_ok=True)
    real_files, real_tok = real_trace_files(cfg)
    real = None
    if real_files and real_tok:
        st.run("measure/real traces", ot / "real.json", lambda: measure_files(real_files, real_tok, ot / "real.json"))
        real = json.loads((ot / "real.json").read_text())
    else:
        log("[testbed] no real traces found ($REARL_SHARED/data/traces): the toy is measured alone")
    for n in names:
        tr = ot / f"{n}_traces.jsonl"
        st.run(f"measure/{n}", ot / f"{n}.json", lambda n=n, tr=tr: (
            write_trace_file(ev / n, heldout, tr), measure_files([str(tr)], model, ot / f"{n}.json")))
    overthinking = {n: next(iter(json.loads((ot / f"{n}.json").read_text())["files"].values())) for n in names}

    # 6. report (always rebuilt: cheap)
    from rearl.eval.report import make_report

    rep = out / "report"
    report = make_report([str(ev / n) for n in names], rep, reference=str(ev / "base"),
                         labels=[LABELS.get(n, n) for n in names])
    # the evaluations above carry no trainer state: the curves come from the training directories
    from rearl.eval.report import load_run, plot_training

    plot_training([load_run(out / "train" / m, LABELS.get(m, m)) for m in cfg.methods], rep / "training_curves.png")
    stats = {n: level_stats(ev / n, heldout) for n in names}
    toy_refl = json.loads((toy_dir / "eval.json").read_text()) if (toy_dir / "eval.json").exists() else None
    timing = {m: reflection_timing(out / "train" / m) for m in cfg.methods
              if METHODS[m]["revision"] and METHODS[m].get("reflection_model", cfg.reflection_model) != "oracle"}
    targets = check_targets(stats, overthinking, toy_refl, timing)
    meta = {"model": model, "eval_tasks": cfg.eval_per_level * len(LEVELS), **settings,
            "toy_meta": {k: v for k, v in toy.items() if k in ("parameters", "sft", "probe", "vocab_size", "config")},
            "threshold": threshold}
    meta["toy_meta"].get("sft", {}).pop("loss_curve", None)
    plot_by_level(stats, rep / "by_level.png")
    md = testbed_markdown(stats, targets, meta)
    md += ("\n## Overthinking: the toy next to real reasoning traces (`rearl measure`)\n\n"
           "Median [p10, p90] over correct traces; removable share: thinking tokens after the first correct answer; "
           "refl./1k: reflection words per 1,000 thinking tokens before / after it. Real traces: R1-distill "
           "tokenizer; toy: its own tokenizer, held-out samples at the evaluation temperature.\n\n"
           + overthinking_markdown(real, overthinking) + "\n")
    if toy_refl is not None:
        md += ("\n## The toy reflection model vs the teacher (held-out base responses)\n\n"
               "The toy LRM fine-tuned on the oracle's two-step labels (docs/testbed.md#the-reflection-model); "
               "REA-RL cuts with it, REA-RL (oracle cut) with the teacher itself.\n\n"
               + (toy_dir / "eval.md").read_text())
        for m, t in timing.items():
            if t:
                md += (f"\nScoring during {LABELS.get(m, m)}'s training: {t['reflection_s']:.2f} s of a "
                       f"{t['step_s']:.1f} s step (median over {t['steps']} steps, {100 * t['share']:.1f}%).\n")
    refl = reflector_dir / "eval.md"
    if refl.exists():
        md += "\n## Reflection model vs the oracle (held-out base responses)\n\n" + refl.read_text()
    md += "\n![by level](by_level.png)\n\n![accuracy vs tokens](accuracy_vs_tokens.png)\n\n![training](training_curves.png)\n"
    md += "\n" + stage_times(st.record)
    summary = {"stats": stats, "targets": targets, "reflector_toy": toy_refl, "reflection_timing": timing, "meta": meta, "stages": st.record, "report": report,
               "overthinking": {"toy": overthinking, "real": (real or {}).get("files")}}
    write_text_atomic(rep / "testbed.md", md)
    write_json_atomic(rep / "testbed.json", summary)
    log(f"[testbed] report: {rep / 'testbed.md'}")
    return summary
