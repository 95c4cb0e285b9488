"""The testbed's stages: bookkeeping (a marker file per finished stage, stages side by side in worker
processes), the data, the base responses and calibration, the RL runs' settings and training, the
reflection models' training, and the measurements of traces (`rearl measure`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from rearl.testbed.config import METHODS, StoryConfig
from rearl.testbed.tasks import LEVELS, make_tasks, write_jsonl
from rearl.testbed.toy_reflector import train_toy_reflector
from rearl.testbed.traces import REVISION_SCAFFOLD

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


def next_ready(queue: Sequence[str], after: dict[str, str], done: set[str]) -> int | None:
    """Index of the first queued stage whose prerequisite (if any) has finished."""
    return next((i for i, n in enumerate(queue) if n not in after or after[n] in done), None)


def run_side_by_side(st: "Stages", items: Sequence[tuple[str, Path, str, tuple]], jobs: int, threads: int,
                     logs: Path, progress: bool, after: dict[str, str] | None = None) -> None:
    """Run the (name, marker, kind, args) stages not yet done, `jobs` at a time, each in its own process
    with `threads` torch threads; its output goes to <logs>/<name>.log. Progress: one bar a stage.

    `after` maps a stage to the one it needs finished first (an evaluation to its training). A free
    worker takes the first stage in `items` order whose prerequisite is done, so a run's evaluation
    starts as soon as its training ends: a study that spans sessions has numbers for its first runs
    instead of waiting for every training."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from rearl.core.io import write_json_atomic

    after = after or {}
    todo, done = [], set()
    for name, marker, kind, args in items:
        if marker.exists():
            st.log(f"[testbed] {name}: done before, skipped ({marker})")
            done.add(name)
        else:
            todo.append((name, kind, args))
    if not todo:
        return
    unknown = sorted({after[n] for n, _, _ in todo if n in after} - {it[0] for it in items})
    if unknown:
        raise ValueError(f"stages wait for stages not in the list: {', '.join(unknown)}")
    logs.mkdir(parents=True, exist_ok=True)
    st.log(f"[testbed] {', '.join(n for n, _, _ in todo)}: {jobs} at a time, {threads} thread(s) each "
           f"(logs in {logs})")
    from tqdm.auto import tqdm

    t0 = time.monotonic()
    bars: dict[str, Any] = {}
    queue = list(todo)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futs: dict[str, tuple[Any, Path]] = {}
        try:
            while queue or futs:
                while len(futs) < jobs:
                    ready = next_ready([n for n, _, _ in queue], after, done)
                    if ready is None:
                        break
                    name, kind, args = queue.pop(ready)
                    log = logs / (name.replace("/", "_") + ".log")
                    futs[name] = (pool.submit(_stage_worker, kind, args, str(log), threads), log)
                if not futs:  # cannot happen with prerequisites from `items`; never spin
                    raise RuntimeError(f"stages {', '.join(n for n, _, _ in queue)} wait for nothing that runs")
                for name in sorted(futs):
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
                        del futs[name]
                        try:
                            secs = fut.result()
                        except Exception as e:
                            raise RuntimeError(f"stage {name} failed: {e} (see {log})") from e
                        done.add(name)
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
