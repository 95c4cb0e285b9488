"""Which way does GRPO push a re-check the policy makes unconditionally? The simulation behind world v5's
slip share and the study's remedy (docs/testbed.md#world-v5).

A share `s` of hard problems slips in the first pass: there only a re-check gets the answer right; elsewhere
both are right and the re-check only costs tokens (400 tokens against 200, sd 30). The policy re-checks with
probability p whatever the problem (it has not learnt to tell the two apart). Each group of G samples gets
accuracy + a length reward, and the expected policy-gradient push on the re-check logit is
sum_i A_i * (x_i - p) averaged over groups (x_i = 1 when sample i re-checked). Negative: towards skipping.

Length rewards: `kimi` (per problem, Kimi k1.5, arXiv 2501.12599: correct 0.5 - (L - Lmin) / (Lmax - Lmin),
wrong min(0, that)), `refined` (REA-RL's: the range over correct samples only, wrong -0.5) and `alp` (the
adaptive length penalty, arXiv 2506.05256: -beta * max(solve rate, 1/G) * L / N, beta 1, N 640) and `apr`
(the refined reward on the thinking after the answer stabilised only, after arXiv 2602.00760: an unneeded
re-check comes after the answer, a needed one before; a short tail of 0-40 tokens either way).
Advantages: group-normalised (TRL `scale_rewards: group`) or raw centred rewards (`none`).

The re-check is perfect by default. `--fix F --breaks B` make it as reliable as a measured policy: it
gets a slipped answer right with probability F and turns a right first answer wrong with probability B
(the world v5 toy LRM's own, measured on 500 hard held-out tasks: F = 0.63, B = 0.13; docs/testbed.md).

    python scripts/group_vote.py            # pure Python, about a minute
    python scripts/group_vote.py --shares 0.56 --fix 0.63 --breaks 0.13
"""

from __future__ import annotations

import argparse
import random
import statistics


def length_reward(kind: str, acc: list[float], lengths: list[float], norm: float = 640.0) -> list[float]:
    g = len(acc)
    if kind == "apr":  # `lengths` are the tokens after the answer stabilised
        kind = "refined"
    if kind == "alp":
        solved = max(sum(acc) / g, 1.0 / g)
        return [-solved * n / norm for n in lengths]
    pool = [n for n, a in zip(lengths, acc) if a] if kind == "refined" else lengths
    lo, hi = (min(pool), max(pool)) if pool else (0.0, 0.0)

    def lam(n: float) -> float:
        return 0.5 - (n - lo) / (hi - lo) if hi > lo else 0.0

    if kind == "refined":
        return [lam(n) if a else -0.5 for n, a in zip(lengths, acc)]
    return [lam(n) if a else min(0.0, lam(n)) for n, a in zip(lengths, acc)]


def outcome(rnd: random.Random, checked: bool, slipped: bool, fix: float, breaks: float) -> float:
    """1.0 when the sample's answer is right. Draws only for an imperfect re-check, so the default's
    random stream (and the published table) stay as they were."""
    if not checked:
        return float(not slipped)
    if slipped:
        return 1.0 if fix >= 1.0 or rnd.random() < fix else 0.0
    return 0.0 if breaks > 0.0 and rnd.random() < breaks else 1.0


def push(share: float, p: float, kind: str, scaled: bool, g: int = 4, trials: int = 20000, seed: int = 0,
         fix: float = 1.0, breaks: float = 0.0) -> float:
    rnd = random.Random(seed)
    total = 0.0
    for _ in range(trials):
        slipped = rnd.random() < share
        checks = [rnd.random() < p for _ in range(g)]
        lengths = [(400.0 if c else 200.0) + rnd.gauss(0, 30) for c in checks]
        acc = [outcome(rnd, c, slipped, fix, breaks) for c in checks]
        if kind == "apr":
            lengths = [n - 200.0 if c and not slipped else abs(rnd.gauss(0, 20)) for n, c in zip(lengths, checks)]
        r = [a + b for a, b in zip(acc, length_reward(kind, acc, lengths))]
        mean, sd = statistics.mean(r), statistics.stdev(r)
        if scaled:
            adv = [0.0] * g if sd < 1e-6 else [(x - mean) / (sd + 1e-4) for x in r]
        else:
            adv = [x - mean for x in r]
        total += sum(a * ((1.0 if c else 0.0) - p) for a, c in zip(adv, checks))
    return total / trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shares", default="0.2,0.36,0.5,0.55,0.6,0.7")
    ap.add_argument("--rates", default="0.9,0.6", help="re-check probabilities of the policy")
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--fix", type=float, default=1.0, help="P(a needed re-check gets the answer right)")
    ap.add_argument("--breaks", type=float, default=0.0, help="P(an unneeded re-check turns a right answer wrong)")
    ap.add_argument("--kinds", default="kimi,refined,alp,apr", help="length rewards to simulate")
    a = ap.parse_args()
    rates = [float(x) for x in a.rates.split(",")]
    print("| length reward | advantages | slip share | " + " | ".join(f"push at p={p}" for p in rates) + " |")
    print("|---|---|---|" + "---|" * len(rates))
    for kind in a.kinds.split(","):
        for scaled in (True, False):
            for s in (float(x) for x in a.shares.split(",")):
                cells = " | ".join(f"{push(s, p, kind, scaled, trials=a.trials, fix=a.fix, breaks=a.breaks):+.3f}" for p in rates)
                print(f"| {kind} | {'group' if scaled else 'raw'} | {s} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
