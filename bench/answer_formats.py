"""Answer formats: does the accuracy reward agree with math-verify itself?

Cases are built from the real gold answers of the eval files (../shared/data/eval): each gold is
written back as a completion in the formats people and models use (boxed, unboxed "The answer is",
thousands separators, units, several boxes for a set, a gold written in LaTeX `$...$` or boxed),
plus a wrong answer in the same format. The reference is math-verify's own
`verify(parse(gold), parse(answer_part))`; the table gives, per extraction mode of
`rearl.core.rewards.AccuracyReward`, the share of cases where the reward agrees with it.

    python bench/answer_formats.py [--per-benchmark 150] [--out runs/answer_formats.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
from collections import defaultdict

from rearl.core.answers import EXTRACT_MODES
from rearl.core.rewards import AccuracyReward, normalize_gold
from rearl.core.verify import VerifierPool
from rearl.eval.benchmarks import BENCHMARKS, load_benchmark

_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def _top_level_items(s: str) -> list[str]:
    """`a, b, c` split at commas outside brackets (a set or list of answers), else [s]."""
    items, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    items.append(cur.strip())
    return [x for x in items if x] if len(items) > 1 and depth == 0 else [s]


def _wrong(g: str) -> str:
    if _NUM.fullmatch(g):
        return str(float(g) + 1) if "." in g else str(int(g) + 1)
    return g + "+1"


def build_cases(per_benchmark: int = 150, seed: int = 0) -> list[dict[str, str]]:
    """(format, gold as stored, completion) for real gold answers, deterministic."""
    rng = random.Random(seed)
    cases = []
    for name in BENCHMARKS:
        golds = [str(r["answer"]) for r in load_benchmark(name) if r.get("answer") is not None]
        for raw in rng.sample(golds, min(per_benchmark, len(golds))):
            g = normalize_gold(raw)
            if not g:
                continue
            think = "<think>\nLet me work it out step by step.\n</think>\n\n"
            add = lambda fmt, text, gold=raw: cases.append({"benchmark": name, "format": fmt, "gold": gold,  # noqa: E731
                                                            "completion": think + text})
            add("boxed", f"So the final answer is $\\boxed{{{g}}}$.")
            add("boxed, wrong", f"So the final answer is $\\boxed{{{_wrong(g)}}}$.")
            add("unboxed", f"The answer is {g}." if _NUM.fullmatch(g) else f"The answer is ${g}$.")
            if re.fullmatch(r"\d{4,}", g):
                add("thousands separators", f"The answer is {int(g):,}.")
                add("thousands separators, boxed", f"The answer is $\\boxed{{{int(g):,}}}$.")
            if _NUM.fullmatch(g):
                add("units", f"The answer is $\\boxed{{{g} \\text{{ cm}}}}$.")
            items = _top_level_items(g)
            if len(items) > 1:
                add("several boxes", ", ".join(f"\\boxed{{{x}}}" for x in items))
                add("several boxes, text", " \\text{and} ".join(f"\\boxed{{{x}}}" for x in items))
            add("gold in $...$", f"$\\boxed{{{g}}}$", gold=f"${g}$")
            add("gold boxed", f"$\\boxed{{{g}}}$", gold=f"\\boxed{{{g}}}")
    return cases


def reference(cases: list[dict[str, str]]) -> list[bool]:
    """math-verify's own verdict: verify(parse(gold), parse(answer part))."""
    from math_verify import parse, verify

    out = []
    for c in cases:
        g = c["gold"] if ("$" in c["gold"] or "\\boxed" in c["gold"]) else f"${c['gold']}$"
        pred = c["completion"].split("</think>", 1)[1]
        try:
            out.append(bool(verify(parse(g), parse(pred))))
        except Exception:  # noqa: BLE001 - math-verify's own failure is a "no"
            out.append(False)
    return out


def agreement(cases: list[dict[str, str]], ref: list[bool], modes=EXTRACT_MODES, workers: int = 2
              ) -> dict[str, dict[str, float]]:
    """{mode: {format: % of cases where the reward equals math-verify's verdict}} (+ "all")."""
    table: dict[str, dict[str, float]] = {}
    with VerifierPool(workers=workers, timeout=10.0) as pool:
        for mode in modes:
            acc = AccuracyReward(mode=mode, pool=pool)
            got = acc(completions=[c["completion"] for c in cases], answer=[c["gold"] for c in cases])
            by: dict[str, list[bool]] = defaultdict(list)
            for c, r, g in zip(cases, ref, got):
                by[c["format"]].append((g == 1.0) == r)
                by["all"].append((g == 1.0) == r)
            table[mode] = {f: round(100.0 * sum(v) / len(v), 1) for f, v in by.items()}
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-benchmark", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="write the table as JSON")
    a = ap.parse_args(argv)
    logging.disable(logging.CRITICAL)
    cases = build_cases(a.per_benchmark)
    ref = reference(cases)
    table = agreement(cases, ref, workers=a.workers)
    formats = sorted({c["format"] for c in cases}) + ["all"]
    counts = {f: sum(c["format"] == f for c in cases) for f in formats[:-1]} | {"all": len(cases)}
    print(f"{len(cases)} cases from {len(BENCHMARKS)} eval files; math-verify says equal in {sum(ref)}")
    print("| format | cases | " + " | ".join(EXTRACT_MODES) + " |")
    print("|---|---|" + "---|" * len(EXTRACT_MODES))
    for f in formats:
        print(f"| {f} | {counts[f]} | " + " | ".join(f"{table[m].get(f, float('nan')):.1f}" for m in EXTRACT_MODES) + " |")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            json.dump({"cases": len(cases), "agreement_pct": table, "counts": counts}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
