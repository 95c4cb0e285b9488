"""The GPU path in one short run (issue: the GPU path before the first GPU user runs it).

On a lent single-GPU machine: `rearl train` with the testbed's toy LRM on CUDA in bf16 for GRPO,
GRPO + length, REA-RL with the oracle's cut and REA-RL with the toy reflection model (when one is
given), a few steps each at the paper's batch (16 prompts x G=4, + 4 revisions each), a resume, and
`rearl eval` on CUDA; one verdict line per check (finite loss, revision metrics, the true lengths next
to TRL's, the sampler-vs-trainer log-prob difference where vLLM is used), then `device check: N passed,
M failed`. `--dry-run` runs the same checks on CPU in float32 at a tiny size (what CI runs).

    python scripts/device_check.py --toy DIR [--reflector DIR] [--out DIR] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

RESULTS: list[tuple[bool, str, str]] = []


def verdict(ok: bool, name: str, detail: str) -> bool:
    RESULTS.append((ok, name, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def history(run_dir: Path) -> list[dict]:
    from rearl.eval.report import find_trainer_state

    ts = find_trainer_state(run_dir)
    return json.loads(ts.read_text())["log_history"] if ts else []


def _mean(rows: list[dict], key: str) -> float | None:
    xs = [r[key] for r in rows if key in r]
    return sum(xs) / len(xs) if xs else None


def check_run(method: str, run_dir: Path, steps: int, revision: bool, vllm: bool) -> None:
    rows = [h for h in history(run_dir) if "loss" in h and "train_runtime" not in h]
    losses = [h["loss"] for h in rows]
    ok = len(rows) >= steps and all(math.isfinite(x) for x in losses)
    samples, trl_len = _mean(rows, "lengths/samples/mean"), _mean(rows, "completions/mean_length")
    detail = (f"{len(rows)} steps, loss {', '.join(f'{x:.4g}' for x in losses)}; samples {samples or 0:.0f} tokens "
              f"(TRL's completions/mean_length {trl_len or 0:.0f})")
    ok &= samples is not None and samples > 0
    if revision:
        acc, fails = _mean(rows, "revision/accept_rate"), sum(h.get("revision/failures", 0) for h in rows)
        rev_len = _mean(rows, "lengths/revisions/mean")
        detail += f"; revisions accepted {acc if acc is not None else float('nan'):.2f}, failures {fails:.0f}, " \
                  f"accepted revision {rev_len or 0:.0f} tokens"
        ok &= acc is not None
    diff = _mean(rows, "sampling/logprob_diff/seq_mean")
    detail += (f"; sampler-trainer log-prob diff per sequence {diff:.3g}" if diff is not None
               else "; no sampler log-probs (in-process generation)" if not vllm else "; sampler diff MISSING")
    ok &= diff is not None or not vllm
    timing = _mean(rows, "step_time")
    if timing:
        detail += f"; {timing:.1f} s a step"
    verdict(ok, f"train {method}", detail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toy", required=True, help="a built toy LRM directory (rearl testbed build)")
    p.add_argument("--reflector", default=None, help="a toy reflection model directory (the story's reflector_toy/model)")
    p.add_argument("--out", default="runs/device_check")
    p.add_argument("--dry-run", action="store_true", help="CPU, float32, tiny: checks the script itself (CI)")
    p.add_argument("--steps", type=int, default=None, help="RL steps per method (default 3; dry run 2)")
    a = p.parse_args(argv)

    import torch

    from rearl.testbed.story import METHODS, StoryConfig, train_settings
    from rearl.testbed.tasks import make_tasks, write_jsonl
    from rearl.train.config import load_config
    from rearl.train.run import train

    cuda = torch.cuda.is_available()
    if not a.dry_run and not cuda:
        print("device check: no CUDA device here (use --dry-run on CPU)", file=sys.stderr)
        return 2
    dev = "cpu" if a.dry_run else "cuda"
    steps = a.steps or (2 if a.dry_run else 3)
    size = dict(prompts_per_step=2, group_size=2, max_tokens=256) if a.dry_run else dict(
        prompts_per_step=16, group_size=4, max_tokens=640)  # the paper's batch: 16 prompts x G=4 (+4 revisions)
    print(f"device check: {dev}" + (f" ({torch.cuda.get_device_name(0)})" if dev == "cuda" else "") +
          f", torch {torch.__version__}, {steps} steps, {size['prompts_per_step']} prompts x G={size['group_size']}",
          flush=True)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(make_tasks(size["prompts_per_step"] * (steps + 2) * 2, seed=11), out / "train.jsonl")
    heldout = write_jsonl(make_tasks(8 if a.dry_run else 64, seed=12), out / "heldout.jsonl", prefix="heldout")
    story = StoryConfig(steps=steps, **size)
    methods = ["grpo", "grpo_len", "rea_rl_oracle"] + (["rea_rl"] if a.reflector else [])
    if not a.reflector:
        print("SKIP train rea_rl: no toy reflection model given (--reflector)", flush=True)

    def settings(method: str, run_dir: Path, max_steps: int) -> dict:
        s = train_settings(story, method, a.toy, data, 78.0, a.reflector if method == "rea_rl" else "oracle", run_dir)
        s.update(max_steps=max_steps, save_strategy="steps", save_steps=steps, save_total_limit=2, disable_tqdm=True)
        if dev == "cuda":
            s.update(use_cpu=False, bf16=True, dtype="bfloat16")
        return s

    def run(method: str, run_dir: Path, max_steps: int, resume: bool = False) -> None:
        import yaml

        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(settings(method, run_dir, max_steps), sort_keys=False))
        model_args, data_args, cfg = load_config(str(run_dir / "config.yaml"))
        train(model_args, data_args, cfg, resume=resume)

    t_all = time.monotonic()
    for m in methods:
        run_dir = out / "train" / m
        try:
            run(m, run_dir, steps)
            check_run(m, run_dir, steps, METHODS[m]["revision"], vllm=False)
        except Exception as e:  # noqa: BLE001 - a verdict per check, then the next one
            verdict(False, f"train {m}", f"{type(e).__name__}: {e}")

    # a resume continues from the last checkpoint
    try:
        run("grpo", out / "train" / "grpo", steps + 1, resume=True)
        last = max(h.get("step", 0) for h in history(out / "train" / "grpo"))
        verdict(last == steps + 1, "resume grpo", f"continued to step {last} (asked {steps + 1})")
    except Exception as e:  # noqa: BLE001
        verdict(False, "resume grpo", f"{type(e).__name__}: {e}")

    # rearl eval of a trained policy on the device
    try:
        from rearl.eval.run import EvalConfig, evaluate

        ev = out / "eval" / "grpo"
        res = evaluate(EvalConfig(model=str(out / "train" / "grpo"), out=str(ev), benchmarks=[str(heldout)], n=1,
                                  max_tokens=size["max_tokens"], budgets=[size["max_tokens"]], temperature=0.6,
                                  top_p=0.95, device=dev, batch_size=64), progress=False)
        summ = json.loads((ev / "summary.json").read_text())
        n = sum(1 for _ in open(ev / "samples.jsonl", encoding="utf-8"))
        b = summ["benchmarks"]["heldout"]["budgets"][str(size["max_tokens"])]
        verdict(n == (8 if a.dry_run else 64), "eval grpo",
                f"{n} samples, accuracy {b.get('accuracy', float('nan')):.1f}%, {b.get('mean_tokens', 0):.0f} tokens")
        del res
    except Exception as e:  # noqa: BLE001
        verdict(False, "eval grpo", f"{type(e).__name__}: {e}")

    passed = sum(ok for ok, _, _ in RESULTS)
    failed = len(RESULTS) - passed
    print(f"device check: {passed} passed, {failed} failed ({time.monotonic() - t_all:.0f} s)", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
