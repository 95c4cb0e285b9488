"""Toy LRM SFT throughput with one and with two torch threads, side by side in one run.

The testbed's first `make demo` spends most of its time building the toy LRM; `pick_threads()`
gives the build fewer threads when the machine is busy. This measures what that choice costs:
document tokens per second over the same SFT batches (default config, fresh model) at each thread
count, each in its own process, one after the other, and the ratio.

    python bench/toy_sft_threads.py [--steps 40] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import torch
from dataclasses import replace
from rearl.testbed.tasks import make_tasks
from rearl.testbed.toy_model import ToyConfig, make_model, sft, train_tokenizer
from rearl.testbed.traces import make_traces
threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
cfg = ToyConfig()
tasks = make_tasks(cfg.tokenizer_corpus, cfg.levels, seed=cfg.seed + 10_000)
tok = train_tokenizer([t.document for t in make_traces(tasks, seed=cfg.seed + 10_000)])
model = make_model(tok, cfg.size, cfg.seed)
sft(model, tok, cfg, progress=False, max_steps=3)  # warm-up (kernel setup), not timed
model = make_model(tok, cfg.size, cfg.seed)
log = sft(model, tok, cfg, progress=False, max_steps=steps)
print(json.dumps({"threads": threads, "steps": log["steps"], "seconds": log["seconds"],
                  "tokens_per_second": log["tokens_per_second"]}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    res = []
    for n in [int(x) for x in a.threads.split(",")]:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(a.steps)], capture_output=True, text=True,
                             env={**__import__("os").environ, "OMP_NUM_THREADS": str(n)})
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        res.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{n} thread(s): {res[-1]['tokens_per_second']} document tokens/s ({res[-1]['seconds']} s, {a.steps} steps)")
    if len(res) >= 2:
        print(f"ratio {res[-1]['threads']} vs {res[0]['threads']} thread(s): "
              f"{res[-1]['tokens_per_second'] / res[0]['tokens_per_second']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
