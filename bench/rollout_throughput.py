"""Rollout throughput: transformers' `generate` against rearl's lean batched decoder
(`rearl.backends.lean`), side by side in one run, on the testbed's toy LRM shape.

Part 1, sampling: the toy LRM's architecture (LlamaForCausalLM, 4 layers, hidden 128, 4 heads, vocab
164; the built toy when --toy is given, else the same shape with random weights), random 40-token
prompts, --new tokens forced for both engines (no EOS stop), T 0.7, top_p 1, one thread. Prints
tokens/s per engine and batch, then the line `rollout speed-up: N.Nx` (lean / generate at the
largest batch).

Part 2, a training step's time (--steps > 0): the real REARLTrainer on the built toy LRM and its
tasks (oracle cut), P prompts x G=4 (+4 revisions each), once with `rollout_backend: hf` and once
with `lean`; the time of each part of the step from timers around the trainer's methods: generation
of the samples, the oracle's cut (reflection), the revisions, the reference / old log-probs, the
loss forward and the backward. Medians over steps 2..N.

    OMP_NUM_THREADS=1 python bench/rollout_throughput.py                      # part 1 only
    OMP_NUM_THREADS=1 python bench/rollout_throughput.py --toy DIR --steps 4  # both parts
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def toy_shape_model(seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=164, hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def sample_speed(model, batches: list[int], new: int, reps: int) -> list[dict]:
    import torch

    from rearl.backends.hf import left_pad
    from rearl.backends.lean import LeanDecoder

    vocab = model.config.vocab_size
    lean = LeanDecoder(model)

    def run(engine: str, b: int, plen: int, n_new: int) -> float:
        g = torch.Generator().manual_seed(b * 1000 + plen)
        prompts = [torch.randint(3, vocab, (plen,), generator=g).tolist() for _ in range(b)]
        t0 = time.perf_counter()
        if engine == "generate":
            ids, mask = left_pad(prompts, 0)
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_new, min_new_tokens=n_new,
                                     do_sample=True, temperature=0.7, top_p=1.0, top_k=0, pad_token_id=0)
            n = (out.shape[1] - ids.shape[1]) * b
        else:
            n = sum(len(o[0]) for o in lean.generate(prompts, n_new, [], temperature=0.7, top_k=0, top_p=1.0))
        assert n == n_new * b, (engine, n)
        return time.perf_counter() - t0

    rows = []
    for b in batches:
        res = {"batch": b}
        for engine in ("generate", "lean"):
            run(engine, b, 30, 16)  # warm-up (first-call set-up), not timed
            # a new prompt length per repetition, as in training, where every step brings new shapes
            times = [run(engine, b, 40 + r, new) for r in range(reps)]
            t = statistics.median(times)
            res[engine] = new * b / t
            print(f"  batch {b:3d}  {engine:8s}  {res[engine]:8.0f} tokens/s  (median {t:.2f} s for {new * b} tokens; "
                  f"runs {', '.join(f'{x:.2f}' for x in times)} s)", flush=True)
        rows.append(res)
    return rows


# -- part 2: the training step ------------------------------------------------------------------
class _Timers:
    def __init__(self):
        self.t: dict[str, float] = {}

    def wrap(self, obj, name: str, label: str, when=None):
        fn = getattr(obj, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if when is None or when(a, k):
                    self.t[label] = self.t.get(label, 0.0) + time.perf_counter() - t0
        setattr(obj, name, timed)


def step_breakdown(toy: str, backend: str, prompts: int, steps: int, max_tokens: int) -> dict[str, float]:
    import torch

    from rearl.testbed.tasks import make_tasks, write_jsonl
    from rearl.testbed.traces import REVISION_SCAFFOLD
    from rearl.train.config import load_config
    from rearl.train.run import build_model, load_train_dataset
    from rearl.train.trainer import REARLTrainer

    with tempfile.TemporaryDirectory() as out:
        data = write_jsonl(make_tasks(prompts * (steps + 1), seed=7), os.path.join(out, "train.jsonl"))
        m, d, c = load_config(None, [
            f"model_name_or_path={toy}", f"train_files=[{data}]", f"output_dir={out}/run", "use_cpu=true", "bf16=false",
            f"max_steps={steps}", f"per_device_train_batch_size={prompts * 8}", "num_generations=8",
            f"max_completion_length={max_tokens}", "revision_max_tokens=16", f"revision_scaffold={REVISION_SCAFFOLD!r}",
            "reflection_model=oracle", "reflection_threshold=78", "short_trace_rule=none", "temperature=0.6",
            "top_p=1.0", "top_k=0", "beta=0.04", "loss_type=dapo", "learning_rate=5e-5", "logging_steps=1",
            "save_strategy=no", "report_to=none", "disable_tqdm=true", f"rollout_backend={backend}", "seed=0"])
        model, tok, peft = build_model(m)
        tr = REARLTrainer(model=model, args=c, train_dataset=load_train_dataset(d), processing_class=tok, peft_config=peft)
        timers = _Timers()
        per_step: list[dict[str, float]] = []
        timers.wrap(tr, "_get_per_token_logps_and_entropies", "logprobs (ref/old, no grad)",
                    when=lambda a, k: not torch.is_grad_enabled())
        timers.wrap(tr, "compute_loss", "loss forward")
        timers.wrap(tr, "training_step", "whole step")
        orig_log = tr.log

        def log(logs, *a, **k):
            m = tr._metrics["train"]  # GRPOTrainer.log averages these into its record and clears them

            def last(key):
                return statistics.fmean(m[key]) if m.get(key) else 0.0
            if m.get("timing/generate_s"):
                t = dict(timers.t)
                t["generation"] = last("timing/generate_s")
                t["reflection (oracle cut)"] = last("timing/reflection_s")
                t["revisions"] = last("timing/revision_s")
                t["backward + optimizer"] = t.get("whole step", 0.0) - t.get("loss forward", 0.0) - t.get(
                    "logprobs (ref/old, no grad)", 0.0) - t["generation"] - t["reflection (oracle cut)"] - t["revisions"]
                t["tokens per sample"] = last("lengths/samples/mean")
                per_step.append(t)
                timers.t.clear()
            return orig_log(logs, *a, **k)
        tr.log = log
        tr.train()
    later = per_step[1:] or per_step
    return {k: statistics.median(s[k] for s in later) for k in later[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toy", default=None, help="a built toy LRM directory (rearl testbed build); part 1 uses its weights")
    p.add_argument("--batches", default="8,64", help="batch sizes of part 1")
    p.add_argument("--new", type=int, default=400, help="new tokens per sample (forced, part 1)")
    p.add_argument("--max-tokens", type=int, default=640, help="part 2: generation budget (the story's)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement, each with new shapes (the median counts)")
    p.add_argument("--steps", type=int, default=0, help="part 2: training steps per backend (needs --toy)")
    p.add_argument("--prompts", default="8,16", help="part 2: prompts per step")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"torch threads {torch.get_num_threads()}", flush=True)
    if a.toy:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(a.toy, dtype=torch.float32).eval()
    else:
        model = toy_shape_model()
    print(f"part 1: sampling, {sum(p.numel() for p in model.parameters()):,} parameters, {a.new} new tokens, T 0.7")
    rows = sample_speed(model, [int(x) for x in a.batches.split(",")], a.new, a.reps)
    top = rows[-1]
    print(f"rollout speed-up: {top['lean'] / top['generate']:.1f}x (batch {top['batch']}: {top['lean']:.0f} vs "
          f"{top['generate']:.0f} tokens/s)", flush=True)
    if a.steps:
        if not a.toy:
            print("part 2 needs --toy", file=sys.stderr)
            return 2
        for n in [int(x) for x in a.prompts.split(",")]:
            res = {b: step_breakdown(a.toy, b, n, a.steps, a.max_tokens) for b in ("hf", "lean")}
            print(f"\npart 2: {n} prompts x G=4 (+4 revisions), seconds per step (median of steps 2..{a.steps})")
            print(f"  {'part':30s} {'generate (before)':>18s} {'lean (after)':>14s}")
            for k in res["hf"]:
                print(f"  {k:30s} {res['hf'][k]:18.2f} {res['lean'][k]:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
