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
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rearl.testbed.tasks import EASY, HARD, LEVELS, make_tasks, write_jsonl
from rearl.testbed.toy_reflector import train_toy_reflector
from rearl.testbed.traces import REVISION_SCAFFOLD

# What each method changes on top of the shared settings; mirrors recipes/<model>/<method>.yaml.
METHODS: dict[str, dict[str, Any]] = {
    "grpo": {"revision": False, "length_reward": "none", "reflection_reward": False},
    "grpo_len": {"revision": False, "length_reward": "kimi", "reflection_reward": False},
    "rea_rl": {"revision": True, "length_reward": "refined", "reflection_reward": True},
    # the upper bound of the learned reflection model: REA-RL cutting where the gold answer is first stated
    "rea_rl_oracle": {"revision": True, "length_reward": "refined", "reflection_reward": True,
                      "reflection_model": "oracle"},
    "rea_rl_no_reflection_model": {"revision": False, "length_reward": "refined", "reflection_reward": True,
                                   "zero_accuracy_groups": "keep"},
    "rea_rl_no_reflection_reward": {"revision": True, "length_reward": "refined", "reflection_reward": False},
    # not in the paper's tables: REA-RL with the Strong cut (right after the most likely Result paragraph)
    "rea_rl_strong": {"revision": True, "length_reward": "refined", "reflection_reward": True,
                      "reflection_position": "strong"},
}
LABELS = {"base": "Base", "grpo": "GRPO", "grpo_len": "GRPO+len", "rea_rl": "REA-RL", "rea_rl_oracle": "REA-RL (oracle cut)",
          "rea_rl_no_reflection_model": "REA-RL w/o refl. model", "rea_rl_no_reflection_reward": "REA-RL w/o refl. reward", "rea_rl_strong": "REA-RL (Strong cut)"}


REFLECTION_MODELS = ("toy", "oracle", "smollm2")


@dataclass
class StoryConfig:
    """Options of `rearl testbed run` (defaults: the full story, about 35 minutes on 2 CPU cores after the
    toy LRM's 13-minute build; docs/testbed.md#measured)."""

    out: str = "runs/testbed"
    quick: bool = False  # a few-minute version: a small, inaccurate toy model and a handful of steps
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: ["grpo", "grpo_len", "rea_rl", "rea_rl_oracle"])
    # toy model (see toy_model.ToyConfig); None = its defaults
    toy_sft_tokens: int | None = None
    toy_budget_minutes: float | None = None
    toy_cache_dir: str | None = None
    # RL: every method gets the same start, tasks, seed and number of prompts. 90 steps: on world v2 at 60 steps
    # REA-RL reached 0.73 x the base's tokens, at 90 (REA-RL alone) 0.695 x with accuracy +9.5
    steps: int = 90
    prompts_per_step: int = 2
    group_size: int = 4  # G policy samples per prompt (REA-RL adds G revisions: 2G rows, docs/method.md#the-training-step)
    # the authors' schedule and KL (docs/training.md), a higher lr for a 0.8M-parameter policy: world v1's 3.2M
    # model at the authors' 2e-5 barely moved (P(</think>) 6e-5 -> 1e-4 in 100 steps). Measured on world v2 (60
    # steps, docs/testbed.md#settings-and-why): at 1e-4 plain GRPO lost 8 accuracy points and REA-RL 5.5; at 5e-5
    # GRPO kept its accuracy and REA-RL gained 4.5 while cutting 27% of the tokens
    learning_rate: float = 5e-5
    beta: float = 0.04
    # in-process sampling of training and evaluation: "lean" (rearl.backends.lean, the same distribution as
    # transformers' generate at 1.7-2x its speed on one core, bench/rollout_throughput.py) or "hf" (generate;
    # every result up to world v4 was sampled with it)
    rollout_backend: str = "lean"
    # the RL runs' seed (sampling, data order); None: `seed`. The study trains several seeds from one toy, one
    # set of tasks and one evaluation (rearl.testbed.study)
    train_seed: int | None = None
    loss_type: str = "dapo"  # TRL's loss_type; normalised over the generation batch, so a dropped revision is exactly out of the loss
    # sampling temperature of training (and of the base responses that calibrate T). Measured on world v2's toy
    # LRM (200 held-out tasks): accuracy 25% at T=1.0 (column sums wrong in 23% of the columns), 54% at 0.6;
    # at T=1 most groups had no correct sample, so neither the accuracy nor the length reward had a signal
    temperature: float = 0.7
    # generation budget (training and evaluation): world v2's reference traces are 370 tokens on average,
    # p99 570 (measured on 800 traces)
    max_tokens: int = 640
    # REA-RL's reflection model: "toy" (the toy LRM fine-tuned on oracle labels of the base responses, trained
    # before RL: rearl.testbed.toy_reflector), "oracle" (gold answer + verifier) or "smollm2" (the embedded
    # SmolLM2 with LoRA; 5 s a step on this CPU). "rea_rl_oracle" always cuts with the oracle: the upper bound
    reflection_model: str = "toy"
    # the toy reflector's fine-tuning (full, batch 4, cosine): its label loss flattens after ~150 steps on 240
    # base responses (learning_curve.png); 300 steps take ~8.5 min on one thread, beside the GRPO runs
    reflector_toy_steps: int = 300
    reflector_toy_lr: float = 1e-3
    train_tasks: int = 4000
    # the reflection model and the threshold are learnt from base responses on these many tasks
    # (320: the toy reflector learns from 240 of them; with 120 its Normal cut agreed with the teacher on 75% of
    # 40 held-out traces)
    calibration_tasks: int = 320
    # also train and report the SmolLM2 reflection model beside the RL runs (REA-RL cuts with `reflection_model`).
    # Off in the full story: on an AVX2-only 2-core CPU one SmolLM2 LoRA step takes longer than a whole toy RL
    # step, and the 80 steps would take a core for most of the story; the quick story keeps it (CI covers it)
    train_reflector: bool = False
    # what the reflection model learns from: the base model's responses ("base", as in the paper) or
    # the generator's reference traces ("reference": for the quick model, whose answers are rarely right)
    reflector_data: str = "base"
    # optimizer steps of 2 examples (SmolLM2-135M + LoRA: 4.5 s a step on 2 threads, 7.4 s on 1). Measured
    # on the toy's 120 training traces: 30 steps gave P(Result) AUROC 52 (chance) against the oracle,
    # 120 steps 90; 80 keeps the first `make demo` within 30 minutes
    reflector_steps: int = 80
    # evaluation
    eval_per_level: int = 50
    eval_temperature: float = 0.6
    threads: int | None = None  # torch CPU threads (None: torch's default; with jobs > 1: cores / jobs each)
    # independent stages (the methods' training, the base evaluation, the reflector; then the methods'
    # evaluations) run in this many processes at once. Measured here: a toy GRPO step takes 2.6 s on one
    # thread and 2.3 s on two, so two one-thread runs side by side nearly halve the wall time.
    jobs: int = 2
    # the toy LRM must reach this greedy accuracy (%) on every level of its build probe, or the story stops
    # before any RL: a model that never learnt the hard levels makes every later number meaningless
    probe_min_accuracy: float = 30.0
    # real traces measured beside the toy's (`rearl measure`); None = $REARL_SHARED/data/traces if present
    real_traces: list[str] | None = None

    def __post_init__(self):
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
        if self.reflector_data not in ("base", "reference"):
            raise ValueError(f"reflector_data must be 'base' or 'reference', got {self.reflector_data!r}")
        if self.reflection_model not in REFLECTION_MODELS:
            raise ValueError(f"reflection_model must be one of {', '.join(REFLECTION_MODELS)}, got {self.reflection_model!r}")
        for name in ("steps", "prompts_per_step", "group_size", "max_tokens", "train_tasks", "calibration_tasks",
                     "eval_per_level", "jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def quick_config(**overrides: Any) -> StoryConfig:
    """The few-minute story the end-to-end test runs (numbers mean nothing at this size)."""
    base = dict(quick=True, steps=3, prompts_per_step=2, group_size=2, train_tasks=64, calibration_tasks=8,
                reflector_steps=2, reflector_toy_steps=4, reflector_data="reference", eval_per_level=2, max_tokens=384,
                probe_min_accuracy=0.0, real_traces=[], train_reflector=True)
    return StoryConfig(**{**base, **overrides})


# -- stage bookkeeping -----------------------------------------------------------------------------------
class Stages:
    """Runs stages once: a stage is done when its marker file exists; timings go to stages.json."""

    def __init__(self, out: Path, log: Callable[[str], None]):
        self.out = out
        self.log = log
        self.path = out / "stages.json"
        self.record: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, marker: Path, fn: Callable[[], Any]) -> Any:
        from rearl.core.io import write_json_atomic

        if marker.exists():
            self.log(f"[testbed] {name}: done before, skipped ({marker})")
            return None
        self.log(f"[testbed] {name} ...")
        t0 = time.monotonic()
        res = fn()
        sec = round(time.monotonic() - t0, 1)
        self.record[name] = {"seconds": sec, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json_atomic(self.path, self.record)
        self.log(f"[testbed] {name}: {sec:.0f} s")
        return res


# -- independent stages side by side ---------------------------------------------------------------------
def _stage_worker(kind: str, args: tuple, log: str, threads: int) -> float:
    """Runs one stage in a child process (spawned: torch starts fresh with `threads` threads)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import torch

    torch.set_num_threads(threads)
    t0 = time.monotonic()
    run_stage(kind, args, threads, True)
    return round(time.monotonic() - t0, 1)


def run_stage(kind: str, args: tuple, threads: int | None, progress: bool) -> None:
    if kind == "train":
        run_training(*args)
    elif kind == "eval":
        _evaluate(args[0], progress)
    elif kind == "reflector":
        train_and_eval_reflector(*args, progress)
    elif kind == "toy_reflector":
        model, src, out, steps, lr, seed = args
        train_toy_reflector(model, src, out, steps=steps, learning_rate=lr, seed=seed, threads=threads,
                            progress=progress)
    else:
        raise ValueError(kind)


_PROGRESS = __import__("re").compile(r"(\d+)/(\d+) \[")


def _logged_progress(log: Path) -> tuple[int, int] | None:
    """The last tqdm count "n/total [" a child wrote to its log."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = _PROGRESS.findall(tail)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def run_side_by_side(st: "Stages", items: Sequence[tuple[str, Path, str, tuple]], jobs: int, threads: int,
                     logs: Path, progress: bool) -> None:
    """Run the (name, marker, kind, args) stages not yet done, `jobs` at a time, each in its own process
    with `threads` torch threads; its output goes to <logs>/<name>.log. Progress: one bar a stage."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from rearl.core.io import write_json_atomic

    todo = []
    for name, marker, kind, args in items:
        if marker.exists():
            st.log(f"[testbed] {name}: done before, skipped ({marker})")
        else:
            todo.append((name, kind, args))
    if not todo:
        return
    logs.mkdir(parents=True, exist_ok=True)
    st.log(f"[testbed] {', '.join(n for n, _, _ in todo)}: {jobs} at a time, {threads} thread(s) each "
           f"(logs in {logs})")
    from tqdm.auto import tqdm

    t0 = time.monotonic()
    bars: dict[str, Any] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {}
        for name, kind, args in todo:
            log = logs / (name.replace("/", "_") + ".log")
            futs[name] = (pool.submit(_stage_worker, kind, args, str(log), threads), log)
        pending = set(futs)
        try:
            while pending:
                for name in sorted(pending):
                    fut, log = futs[name]
                    pr = _logged_progress(log) if progress else None
                    if pr and progress:
                        if name not in bars:
                            bars[name] = tqdm(total=pr[1], desc=name, unit="it", position=len(bars), leave=True)
                        b = bars[name]
                        if b.total != pr[1]:  # a stage with several bars (e.g. eval, then scoring)
                            b.reset(total=pr[1])
                        b.n = pr[0]
                        b.refresh()
                    if fut.done():
                        pending.discard(name)
                        try:
                            secs = fut.result()
                        except Exception as e:
                            raise RuntimeError(f"stage {name} failed: {e} (see {log})") from e
                        st.record[name] = {"seconds": secs, "parallel": True,
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
                        write_json_atomic(st.path, st.record)
                        st.log(f"[testbed] {name}: {secs:.0f} s")
                time.sleep(1.0)
        finally:
            for b in bars.values():
                b.close()
    wall = round(time.monotonic() - t0, 1)
    st.record[f"side by side: {', '.join(n for n, _, _ in todo)}"] = {"seconds": wall, "wall": True}
    write_json_atomic(st.path, st.record)


# -- data --------------------------------------------------------------------------------------------
def make_data(cfg: StoryConfig, d: Path) -> None:
    """Evaluation tasks (levels in turn), then training and calibration tasks that share no problem with them."""
    levels = tuple(LEVELS)
    evals = make_tasks(cfg.eval_per_level * len(levels), levels, seed=cfg.seed + 20_000)
    seen = {t.problem for t in evals}
    pool = make_tasks(3 * (cfg.train_tasks + cfg.calibration_tasks) + 100, levels, seed=cfg.seed + 30_000)
    fresh = []
    for t in pool:
        if t.problem not in seen:
            seen.add(t.problem)
            fresh.append(t)
    if len(fresh) < cfg.train_tasks + cfg.calibration_tasks:
        raise RuntimeError("could not draw enough distinct toy problems")
    write_jsonl(fresh[: cfg.calibration_tasks], d / "calibration.jsonl", prefix="calib")
    write_jsonl(fresh[cfg.calibration_tasks : cfg.calibration_tasks + cfg.train_tasks], d / "train.jsonl", prefix="train")
    write_jsonl(evals, d / "heldout.jsonl", prefix="heldout")  # last: it marks the stage done


def _eval_config(cfg: StoryConfig, model: str, out: Path, data: Path, *, temperature: float, n: int = 1,
                 reference: Path | None = None):
    from rearl.eval.run import EvalConfig

    return EvalConfig(model=model, out=str(out), benchmarks=[str(data)], n=n, max_tokens=cfg.max_tokens,
                      budgets=[cfg.max_tokens], temperature=temperature, top_p=1.0 if temperature >= 1 else 0.95,
                      seed=cfg.seed, batch_size=32, threads=cfg.threads, backend="lean" if cfg.rollout_backend == "lean" else "hf",
                      reference=str(reference) if reference else None)


def write_trace_file(samples_dir: Path, data: Path, out: Path) -> int:
    """Base samples as a traces file (id, problem, answer, response) for calibration and labelling."""
    from rearl.core.io import read_jsonl, write_text_atomic
    from rearl.eval.benchmarks import load_benchmark

    problems = {r["id"]: r for r in load_benchmark(str(data))}
    lines = []
    for _, rec in read_jsonl(samples_dir / "samples.jsonl"):
        p = problems[rec["id"]]
        lines.append(json.dumps({"id": rec["key"], "problem": p["problem"], "answer": p["answer"],
                                 "level": p.get("level"), "response": rec["text"]}))
    write_text_atomic(out, "".join(x + "\n" for x in lines))
    return len(lines)


def write_reference_traces(data: Path, out: Path, seed: int) -> int:
    """The generator's own traces for these tasks (what the toy LRM was trained to write)."""
    from rearl.core.io import read_jsonl, write_text_atomic
    from rearl.testbed.traces import make_traces, task_from_problem

    rows = [r for _, r in read_jsonl(data)]
    traces = make_traces([task_from_problem(r["problem"]) for r in rows], seed=seed + 40_000)
    lines = [json.dumps({"id": r["id"], "problem": r["problem"], "answer": r["answer"], "level": r.get("level"),
                         "response": t.text}) for r, t in zip(rows, traces)]
    write_text_atomic(out, "".join(x + "\n" for x in lines))
    return len(lines)


def calibrate_traces(traces: Path, tokenizer_path: str, out: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from rearl.core.io import write_json_atomic
    from rearl.core.reflection import calibrate
    from rearl.core.text import split_think
    from rearl.core.traces import load_traces

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    rows, ids = [], []
    for tr in load_traces(str(traces)):
        think = split_think(tr.response).think
        rows.append((think, len(tok(think, add_special_tokens=False)["input_ids"])))
        ids.append(tr.id)
    cal = calibrate(rows, quantile=0.2, tokenizer_name=tokenizer_path, ids=ids)
    data = cal.to_json()
    write_json_atomic(out, data)
    return data


# -- training -------------------------------------------------------------------------------------------
def train_seed(cfg: StoryConfig) -> int:
    """The RL runs' seed (sampling and data order); the toy, the tasks and the evaluation keep `seed`."""
    return cfg.seed if cfg.train_seed is None else cfg.train_seed


def train_settings(cfg: StoryConfig, method: str, model: str, data: Path, threshold: float, reflector: str | None,
                   out: Path) -> dict[str, Any]:
    """The flat `rearl train` recipe of one method (written next to its run as config.yaml)."""
    revision = METHODS[method]["revision"]
    gens = 2 * cfg.group_size if revision else cfg.group_size
    s: dict[str, Any] = {
        "model_name_or_path": model, "dtype": "float32",
        "train_files": [str(data)], "data_seed": train_seed(cfg),
        "use_cpu": True, "bf16": False, "seed": train_seed(cfg),
        "learning_rate": cfg.learning_rate, "lr_scheduler_type": "cosine", "warmup_steps": max(1, round(0.1 * cfg.steps)),
        "max_steps": cfg.steps,
        "per_device_train_batch_size": cfg.prompts_per_step * gens, "gradient_accumulation_steps": 1,
        "num_generations": gens, "max_completion_length": cfg.max_tokens,
        "temperature": cfg.temperature, "top_p": 1.0, "top_k": 0,
        "beta": cfg.beta, "loss_type": cfg.loss_type, "scale_rewards": "group", "rollout_backend": cfg.rollout_backend,
        "revision_scaffold": REVISION_SCAFFOLD, "revision_max_tokens": 16,
        # a trace cut at its last paragraph keeps it whole: the toy's last paragraph is often its answer, and the
        # authors' drop_last_part removed that line, failing about half the revisions (docs/testbed.md#measured)
        "short_trace_rule": "none",
        "reflection_model": reflector or "oracle",
        "reflection_threshold": float(threshold),
        "logging_steps": 1, "save_strategy": "steps", "save_steps": max(10, cfg.steps // 4), "save_total_limit": 1,
        "report_to": "none", "output_dir": str(out), "disable_tqdm": False,
    }
    s.update(METHODS[method])
    return s


def run_training(settings: dict[str, Any], out: Path) -> None:
    import yaml

    from rearl.core.io import write_text_atomic
    from rearl.train.config import load_config
    from rearl.train.run import train

    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.yaml"
    write_text_atomic(cfg_path, yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))
    model_args, data_args, rcfg = load_config(str(cfg_path))
    resume = any(out.glob("checkpoint-*"))
    train(model_args, data_args, rcfg, resume=resume)


def check_probe(meta: dict[str, Any], floor: float, model: str) -> None:
    """Stop the story when the toy LRM failed its own build probe (greedy accuracy by level)."""
    probe = meta.get("probe")
    if floor <= 0:
        return
    if not probe:
        raise RuntimeError(f"the toy LRM at {model} has no build probe; rebuild it (rearl testbed build --force)")
    low = {k: v for k, v in probe.items() if k.startswith("L") and v < floor}
    if low:
        sft = meta.get("sft", {})
        why = " (its SFT hit the time cap)" if sft.get("cut_by_time_cap") else ""
        raise RuntimeError(
            f"the toy LRM at {model} failed its probe{why}: greedy accuracy "
            + ", ".join(f"{k} {v:.0f}%" for k, v in sorted(low.items()))
            + f" < {floor:g}% on {probe.get('per_level')} problems per level, after {sft.get('document_tokens', '?')} "
            f"SFT tokens (final loss {sft.get('final_loss', '?')}). RL on it would measure nothing; build it with more "
            "SFT tokens (--toy-sft-tokens) or lower --probe-min-accuracy to go on anyway.")


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


# -- overthinking, measured like real traces (`rearl measure`) ------------------------------------------
REAL_TOKENIZER = "models/deepseek-r1-distill-qwen-tokenizer"


def real_trace_files(cfg: StoryConfig) -> tuple[list[str], str | None]:
    """The real traces to measure beside the toy's, and their tokenizer (from $REARL_SHARED)."""
    from rearl.eval.benchmarks import shared_dir

    tok = shared_dir() / REAL_TOKENIZER
    if cfg.real_traces is not None:
        files = list(cfg.real_traces)
    else:
        d = shared_dir() / "data" / "traces"
        files = sorted(str(p) for p in d.glob("*.jsonl")) if d.is_dir() else []
    return files, (str(tok) if tok.is_dir() else None)


def measure_files(files: Sequence[str], tokenizer: str, out: Path) -> dict[str, Any]:
    """`rearl measure` on trace files; the summaries (per-trace records dropped) go to `out` as JSON."""
    from rearl.core.io import write_json_atomic
    from rearl.eval.overthinking import MeasureConfig, measure

    res = measure(MeasureConfig(input=list(files), tokenizer=tokenizer), progress=False)
    for f in res["files"].values():
        f.pop("records", None)
    write_json_atomic(out, res)
    return res


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


def _f(v: Any, d: int = 1) -> str:
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))


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


def stage_times(record: dict[str, Any]) -> str:
    rows = ["## Stage times (this machine)", "", "| stage | seconds |", "|---|---|"]
    rows += [f"| {k} | {v.get('seconds')}" + (f" (cached; the build took {v.get('build_seconds')} s)" if v.get("cached") else "")
             + (" (side by side)" if v.get("parallel") else "") + " |" for k, v in record.items()]
    # stages that ran side by side count once, through their group's wall time
    total = sum(v.get("seconds") or 0 for v in record.values() if not v.get("parallel"))
    return "\n".join(rows + [f"| total | {total:.0f} |", ""])


def _evaluate(ecfg: Any, progress: bool) -> None:
    from rearl.eval.run import evaluate

    evaluate(ecfg, progress=progress)


def train_and_eval_reflector(cfg: StoryConfig, model: str, traces: Path, out: Path, progress: bool) -> None:
    """Oracle labels on the base responses -> split by problem -> SFT (LoRA) -> report vs the oracle."""
    from rearl.core.io import write_json_atomic, write_text_atomic
    from rearl.reflector.evaluate import EvalConfig as REvalConfig
    from rearl.reflector.evaluate import evaluate_reflector, markdown_table
    from rearl.reflector.labels import LabelConfig, label_file, split_file
    from rearl.reflector.train import load_train_config, train_reflector

    out.mkdir(parents=True, exist_ok=True)
    labels = out / "labels.jsonl"
    label_file(LabelConfig(inputs=[str(traces.resolve())], out=str(labels), tokenizer=model, teacher="oracle"),
               progress=progress)  # absolute: label records point back at their traces file
    split_file(str(labels), str(out / "split"), heldout_fraction=0.25, seed=cfg.seed)
    # recipes/reflector/smollm2-cpu.yaml's settings (LoRA r16/alpha32, lr 5e-4), a fixed number of steps
    tcfg = load_train_config(None, data=[str(out / "split" / "train.jsonl")], out=str(out / "model"),
                             max_steps=cfg.reflector_steps, learning_rate=5e-4, lr_scheduler_type="cosine",
                             warmup_ratio=0.05, per_device_train_batch_size=1, gradient_accumulation_steps=2,
                             logging_steps=5, save_steps=max(10, cfg.reflector_steps // 2), max_length=2048,
                             num_threads=cfg.threads)
    train_reflector(tcfg, progress=progress)
    rep = evaluate_reflector(REvalConfig(model=str(out / "model"), labels=str(out / "split" / "heldout.jsonl"),
                                         out=str(out / "eval_report"), batch_size=4, num_threads=cfg.threads),
                             progress=progress)
    write_text_atomic(out / "eval.md", markdown_table(rep))
    write_json_atomic(out / "eval.json", rep)
