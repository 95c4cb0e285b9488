"""`rearl testbed run|build|measure|tasks` (also `python -m rearl.testbed ...`): the toy world from a shell."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_run(a: argparse.Namespace) -> int:
    from rearl.testbed.story import METHODS, StoryConfig, quick_config, run_story

    methods = list(METHODS) if a.methods == "all" else [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    given = {k: v for k, v in dict(
        out=a.out, seed=a.seed, methods=methods, steps=a.steps, learning_rate=a.learning_rate, beta=a.beta,
        loss_type=a.loss_type, rollout_backend=a.rollout_backend, temperature=a.temperature, eval_temperature=a.eval_temperature, prompts_per_step=a.prompts_per_step, group_size=a.group_size, max_tokens=a.max_tokens,
        probe_min_accuracy=a.probe_min_accuracy,
        reflection_model=a.reflection_model, reflector_toy_steps=a.reflector_toy_steps, eval_per_level=a.eval_per_level, threads=a.threads, jobs=a.jobs,
        toy_sft_tokens=a.toy_sft_tokens, toy_budget_minutes=a.toy_budget_minutes, toy_cache_dir=a.toy_cache_dir,
        train_reflector=False if a.no_reflector else (True if a.reflector else None),
    ).items() if v is not None}
    cfg = quick_config(**given) if a.quick else StoryConfig(**given)
    res = run_story(cfg, progress=not a.no_progress)
    print(f"\nreport: {cfg.out}/report/testbed.md (one training seed per method: the verdict is "
          "`rearl testbed study`'s, docs/testbed.md#the-study)")
    for t in res["targets"]:
        met = "-" if t["met"] is None else ("met" if t["met"] else "MISSED")
        val = "-" if t["measured"] is None else f"{t['measured']:.1f}"
        print(f"  [{met:>6}] {t['target']}: {val}")
    return 0


def study_config(a: argparse.Namespace):
    """The StudyConfig the `study` flags ask for."""
    from rearl.testbed.config import quick_config
    from rearl.testbed.study import StudyConfig

    story = {k: v for k, v in dict(learning_rate=a.learning_rate, beta=a.beta, temperature=a.temperature,
                                   max_tokens=a.max_tokens, toy_cache_dir=a.toy_cache_dir, seed=a.seed,
                                   reflection_model=a.reflection_model).items() if v is not None}
    given = {k: v for k, v in dict(
        out=a.out, steps=a.steps, prompts_per_step=a.prompts_per_step, eval_per_level=a.eval_per_level,
        seeds_main=a.seeds_main, seeds_other=a.seeds_other, jobs=a.jobs, threads=a.threads, quick=a.quick,
        methods=[m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None,
    ).items() if v is not None}
    if a.quick:  # a few minutes, as the help says: the quick story's sizes unless given
        q = quick_config()
        given = {**dict(steps=q.steps, prompts_per_step=q.prompts_per_step, eval_per_level=q.eval_per_level,
                        seeds_main=2, seeds_other=1), **given}
    return StudyConfig(**given, story=story)


def cmd_study(a: argparse.Namespace) -> int:
    from rearl.testbed.study import run_study

    cfg = study_config(a)
    res = run_study(cfg, progress=not a.no_progress, report_only=a.report_only)
    print(f"\nstudy: {cfg.out}/study.md ({res['n_tasks']} held-out tasks"
          + ("" if res["complete"] else f"; partial, {len(res['missing'])} runs not evaluated yet") + ")")
    return 0


def cmd_build(a: argparse.Namespace) -> int:
    from rearl.testbed.toy_model import build_toy_lrm

    print(build_toy_lrm(a.cache_dir, seed=a.seed, quick=a.quick, sft_tokens=a.sft_tokens,
                        budget_minutes=a.budget_minutes, force=a.force, threads=a.threads))
    return 0


def cmd_measure(a: argparse.Namespace) -> int:
    from rearl.testbed.stats import format_table, measure
    from rearl.testbed.toy_model import torch_threads

    with torch_threads():
        res = measure(a.model, n_per_level=a.n_per_level, seed=a.seed, max_new_tokens=a.max_new_tokens,
                      temperatures=[float(x) for x in a.temperatures.split(",")], batch_size=a.batch_size)
    print(format_table(res))
    if a.out:
        from rearl.core.io import write_json_atomic

        write_json_atomic(a.out, res)
    return 0


def cmd_tasks(a: argparse.Namespace) -> int:
    from rearl.testbed.tasks import make_tasks, write_jsonl

    levels = [int(x) for x in a.levels.split(",")]
    print(write_jsonl(make_tasks(a.n, levels, seed=a.seed), a.out))
    return 0


def add_subcommands(sub: Any) -> None:
    """Register run/study/build/measure/tasks on an argparse subparsers object."""
    r = sub.add_parser("run", help="the whole REA-RL story on the toy world: build, calibrate, the toy reflection "
                                   "model, GRPO / GRPO+len / REA-RL / REA-RL (oracle cut), eval, report (stages cached)")
    r.add_argument("--out", default=None, help="run directory (default runs/testbed; a rerun resumes)")
    r.add_argument("--quick", action="store_true", help="a few-minute version (tests): numbers mean nothing")
    r.add_argument("--methods", default=None,
                   help="comma-separated from grpo, grpo_len, rea_rl, rea_rl_oracle, rea_rl_no_reflection_model, "
                        "rea_rl_no_reflection_reward, rea_rl_strong, rea_rl_alp, or 'all' (default: grpo,grpo_len,rea_rl,rea_rl_oracle)")
    r.add_argument("--steps", type=int, default=None, help="RL steps per method")
    r.add_argument("--learning-rate", type=float, default=None)
    r.add_argument("--temperature", type=float, default=None, help="sampling temperature of training")
    r.add_argument("--eval-temperature", type=float, default=None, help="sampling temperature of the evaluations")
    r.add_argument("--beta", type=float, default=None, help="KL coefficient")
    r.add_argument("--loss-type", default=None, help="TRL loss_type (dapo or cispo: normalised over the generation batch, as failed_revision_policy drop needs)")
    r.add_argument("--rollout-backend", default=None, choices=("lean", "hf"),
                   help="in-process sampling of training and evaluation: lean (rearl's batched decoder, default) or hf "
                        "(transformers' generate)")
    r.add_argument("--prompts-per-step", type=int, default=None)
    r.add_argument("--group-size", type=int, default=None, help="G policy samples per prompt")
    r.add_argument("--max-tokens", type=int, default=None, help="generation budget (training and evaluation)")
    r.add_argument("--probe-min-accuracy", type=float, default=None,
                   help="stop unless the toy LRM's greedy probe reaches this accuracy (%%) on every level (default 30)")
    r.add_argument("--reflection-model", choices=["toy", "oracle", "smollm2"], default=None,
                   help="REA-RL's reflection model: the toy LRM fine-tuned as a reflector here (default), the oracle, "
                        "or the SmolLM2 reflector trained here (slow on CPU)")
    r.add_argument("--reflector-toy-steps", type=int, default=None, help="fine-tuning steps of the toy reflector")
    r.add_argument("--reflector", action="store_true",
                   help="also train the SmolLM2 reflection model and report it against the oracle (default: quick only)")
    r.add_argument("--no-reflector", action="store_true", help="skip training the SmolLM2 reflection model")
    r.add_argument("--eval-per-level", type=int, default=None, help="held-out tasks per difficulty level")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: cores / jobs)")
    r.add_argument("--jobs", type=int, default=None,
                   help="independent stages run side by side in this many processes (default 2; 1 = one by one)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--toy-sft-tokens", type=int, default=None, help="SFT tokens of the toy LRM")
    r.add_argument("--toy-budget-minutes", type=float, default=None, help="wall-clock cap of the toy LRM's SFT")
    r.add_argument("--toy-cache-dir", default=None)
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("study", help="every method with several training seeds on one large held-out set, paired "
                                     "differences against the base and GRPO + length (stages cached)")
    s.add_argument("--out", default="runs/testbed-study", help="study directory (a rerun resumes)")
    s.add_argument("--quick", action="store_true", help="a few-minute version (tests): numbers mean nothing")
    s.add_argument("--report-only", action="store_true",
                   help="run nothing: write study.json/.md/.png from the runs evaluated so far (marked partial)")
    s.add_argument("--methods", default=None, help="comma-separated (default: grpo, grpo_len, rea_rl, rea_rl_oracle, "
                                                   "rea_rl_no_reflection_reward, rea_rl_alp)")
    s.add_argument("--seeds-main", type=int, default=None,
                   help="training seeds of GRPO + length, REA-RL (learned and oracle cut) and REA-RL + ALP (default 3)")
    s.add_argument("--seeds-other", type=int, default=None, help="training seeds of the other methods (default 2)")
    s.add_argument("--steps", type=int, default=None, help="RL steps per run (default 150)")
    s.add_argument("--prompts-per-step", type=int, default=None, help="prompts per step, x G=4 (default 8)")
    s.add_argument("--eval-per-level", type=int, default=None, help="held-out tasks per level (default 250: 1,000 tasks)")
    s.add_argument("--learning-rate", type=float, default=None)
    s.add_argument("--beta", type=float, default=None, help="KL coefficient")
    s.add_argument("--temperature", type=float, default=None, help="sampling temperature of training")
    s.add_argument("--max-tokens", type=int, default=None, help="generation budget")
    s.add_argument("--reflection-model", choices=["toy", "oracle", "smollm2"], default=None)
    s.add_argument("--seed", type=int, default=None, help="seed of the toy, the tasks and the evaluation")
    s.add_argument("--toy-cache-dir", default=None)
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads per job (default: cores / jobs)")
    s.add_argument("--jobs", type=int, default=None, help="runs side by side (default 2)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_study)

    b = sub.add_parser("build", help="train (once) the toy overthinking LRM and print its directory")
    b.add_argument("--cache-dir", default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--quick", action="store_true")
    b.add_argument("--sft-tokens", type=int, default=None)
    b.add_argument("--budget-minutes", type=float, default=None)
    b.add_argument("--force", action="store_true")
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: the idle cores)")
    b.set_defaults(func=cmd_build)
    m = sub.add_parser("measure", help="accuracy, overthinking and no-check accuracy by level")
    m.add_argument("model")
    m.add_argument("--n-per-level", type=int, default=50)
    m.add_argument("--temperatures", default="0,0.6")
    m.add_argument("--max-new-tokens", type=int, default=512)
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--seed", type=int, default=1234)
    m.add_argument("--out", default=None, help="write the summary and records here (JSON)")
    m.set_defaults(func=cmd_measure)
    t = sub.add_parser("tasks", help="write toy problems as JSONL (problem, answer, level)")
    t.add_argument("out")
    t.add_argument("--n", type=int, default=200)
    t.add_argument("--levels", default="1,2,3,4")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_tasks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rearl.testbed")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_subcommands(sub)
    a = ap.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
