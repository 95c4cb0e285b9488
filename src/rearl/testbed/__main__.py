"""`python -m rearl.testbed build|measure|tasks`: the toy world from a shell (no rearl CLI changes)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rearl.testbed")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train (once) the toy overthinking LRM and print its directory")
    b.add_argument("--cache-dir", default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--quick", action="store_true")
    b.add_argument("--sft-tokens", type=int, default=None)
    b.add_argument("--budget-minutes", type=float, default=None)
    b.add_argument("--force", action="store_true")
    m = sub.add_parser("measure", help="accuracy, overthinking and no-check accuracy by level")
    m.add_argument("model")
    m.add_argument("--n-per-level", type=int, default=50)
    m.add_argument("--temperatures", default="0,0.6")
    m.add_argument("--max-new-tokens", type=int, default=512)
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--seed", type=int, default=1234)
    m.add_argument("--out", default=None, help="write the summary and records here (JSON)")
    t = sub.add_parser("tasks", help="write toy problems as JSONL (problem, answer, level)")
    t.add_argument("out")
    t.add_argument("--n", type=int, default=200)
    t.add_argument("--levels", default="1,2,3,4")
    t.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    if a.cmd == "build":
        from .toy_model import build_toy_lrm

        print(build_toy_lrm(a.cache_dir, seed=a.seed, quick=a.quick, sft_tokens=a.sft_tokens,
                            budget_minutes=a.budget_minutes, force=a.force))
    elif a.cmd == "measure":
        from .stats import format_table, measure
        from .toy_model import torch_threads

        with torch_threads():
            res = measure(a.model, n_per_level=a.n_per_level, seed=a.seed, max_new_tokens=a.max_new_tokens,
                          temperatures=[float(x) for x in a.temperatures.split(",")], batch_size=a.batch_size)
        print(format_table(res))
        if a.out:
            from ..io import write_json_atomic

            write_json_atomic(a.out, res)
    else:
        from .tasks import make_tasks, write_jsonl

        levels = [int(x) for x in a.levels.split(",")]
        print(write_jsonl(make_tasks(a.n, levels, seed=a.seed), a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
