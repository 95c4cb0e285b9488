"""Verification throughput: rearl's persistent pool vs a fresh process pool per reward call.

The authors' reward code builds a new process pool for every reward call (docs/method.md#accuracy-reward). Here both
sides check the same real (gold, prediction) pairs, in reward-call-sized batches, with the same
number of workers and the same equivalence function; the persistent pool's result cache is off.

    python bench/verify_throughput.py [--pairs 2000] [--batch 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutTimeout

from rearl.core._verify_worker import equivalent
from rearl.core.verify import VerifierPool
from rearl.eval.benchmarks import BENCHMARKS, load_benchmark


def real_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(gold, prediction): a gold answer against itself or against another item's gold of the
    same benchmark (mostly wrong, same format), half each."""
    rng = random.Random(seed)
    golds = {name: [r["answer"] for r in load_benchmark(name)] for name in BENCHMARKS}
    pairs = []
    for name, gs in golds.items():
        for i, g in enumerate(gs):
            pairs.append((g, g))
            pairs.append((g, gs[(i + 1) % len(gs)]))
    rng.shuffle(pairs)
    return pairs[:n]


def run_persistent(pairs, batch, workers, timeout):
    with VerifierPool(workers=workers, timeout=timeout, cache_size=0) as pool:
        pool.verify("1", "1")  # workers up (start-up is paid once per training run)
        t0 = time.perf_counter()
        out = []
        for k in range(0, len(pairs), batch):
            out += [r.ok for r in pool.verify_batch(pairs[k : k + batch])]
        return time.perf_counter() - t0, out


def _check(pair):
    return equivalent(*pair)


def run_fresh(pairs, batch, workers, timeout):
    ctx = mp.get_context("fork")
    equivalent("1", "1")  # math-verify imported in the parent, as in a trainer
    t0 = time.perf_counter()
    out = []
    for k in range(0, len(pairs), batch):
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            futs = [ex.submit(_check, p) for p in pairs[k : k + batch]]
            for f in futs:
                try:
                    out.append(bool(f.result(timeout=timeout)))
                except (FutTimeout, Exception):
                    out.append(False)
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16, help="items per reward call")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # math-verify warns on every call with its own timeouts off
    pairs = real_pairs(a.pairs)
    print(f"{len(pairs)} real (gold, prediction) pairs from {len(BENCHMARKS)} benchmarks, batches of {a.batch}, {a.workers} workers")
    t_p, out_p = run_persistent(pairs, a.batch, a.workers, a.timeout)
    t_f, out_f = run_fresh(pairs, a.batch, a.workers, a.timeout)
    agree = sum(x == y for x, y in zip(out_p, out_f)) / len(pairs)
    print(f"{'':24}{'seconds':>10}{'pairs/s':>12}")
    print(f"{'persistent pool':24}{t_p:>10.2f}{len(pairs) / t_p:>12.1f}")
    print(f"{'fresh pool per call':24}{t_f:>10.2f}{len(pairs) / t_f:>12.1f}")
    print(f"speed-up (persistent / fresh): {t_f / t_p:.2f}x   verdict agreement: {100 * agree:.1f}%   "
          f"accepted: {sum(out_p)} / {len(pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
