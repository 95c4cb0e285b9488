"""Step overhead of REA-RL's sequential revision: the same CPU training config with and without it.

Both runs sample G policy completions for the same prompts; REA-RL additionally scores each with
the reflection model, cuts it and lets the policy write a revised answer (2G rows per group).
Prints the median optimizer-step seconds of each (first step excluded as warm-up) and the ratio
(goal: <= 1.3).

    python bench/step_overhead.py [--model default] [--steps 4] [--g 4] [--max-completion-length 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def run(label: str, overrides: list[str], recipe: str) -> list[float]:
    from rearl.train.config import load_config
    from rearl.train.run import build_model, load_train_dataset
    from rearl.train.trainer import REARLTrainer

    with tempfile.TemporaryDirectory() as out:
        m, d, c = load_config(recipe, overrides + [f"output_dir={out}"])
        model, tok, peft = build_model(m)
        tr = REARLTrainer(model=model, args=c, train_dataset=load_train_dataset(d), processing_class=tok, peft_config=peft)
        tr.train()
        hist = tr.state.log_history
    times = [h["step_time"] for h in hist if "step_time" in h]
    parts = {k: statistics.median([h[k] for h in hist if k in h]) for k in ("timing/generate_s", "timing/reflection_s",
                                                                          "timing/revision_s") if any(k in h for h in hist)}
    print(f"  {label}: step seconds {[round(t, 1) for t in times]}" + (f"  medians {parts}" if parts else ""), flush=True)
    return times


def main(argv=None) -> int:
    shared = os.environ.get("REARL_SHARED", "../shared")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="policy (and reflection) model; default: embedded SmolLM2-135M")
    ap.add_argument("--reflection-model", default=None, help="default: same as --model ('oracle' for the gold detector)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--g", type=int, default=4, help="policy samples per prompt (G)")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step")
    ap.add_argument("--max-completion-length", type=int, default=64)
    ap.add_argument("--revision-max-tokens", type=int, default=32)
    a = ap.parse_args(argv)
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
