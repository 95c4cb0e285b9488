"""Reflection scoring: one teacher-forced pass (`forward`) vs greedy label generation (`generate`).

Both modes score the same real traces with the same reflection model (default: the embedded
SmolLM2-135M-Instruct, in-process on CPU); prints traces/second for each, the ratio, and how often
their Normal cuts agree (exactly and within one paragraph).

    python bench/reflection_scoring.py [--traces FILE] [--limit 8] [--max-think-tokens 2048] [--model default]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from transformers import AutoTokenizer

from rearl.backends.hf import HFReflectionScorer
from rearl.core.positions import cut_positions
from rearl.core.text import ThinkTags, segment
from rearl.core.traces import load_traces


def main(argv=None) -> int:
    shared = os.environ.get("REARL_SHARED", "../shared")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=f"{shared}/data/traces/r1_distill_qwen14b_math500_sentences.jsonl")
    ap.add_argument("--tokenizer", default=f"{shared}/models/deepseek-r1-distill-qwen-tokenizer", help="policy tokenizer")
    ap.add_argument("--model", default="default", help="reflection model (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--max-think-tokens", type=int, default=2048, help="truncate long traces (CPU time)")
    ap.add_argument("--batch-size", type=int, default=4)
    a = ap.parse_args(argv)

    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    tags = ThinkTags.from_tokenizer(tok)
    traces = list(load_traces(a.traces, limit=a.limit))
    segs = [segment(tok, text=t.response, tags=tags, max_think_tokens=a.max_think_tokens) for t in traces]
    problems = [t.problem for t in traces]
    paras = [[p.text for p in s.paragraphs] for s in segs]
    scorer = HFReflectionScorer(a.model, batch_size=a.batch_size)
    scorer.score(problems[:1], [paras[0][:3]], "forward")  # warm-up

    res, secs = {}, {}
    for mode in ("forward", "generate"):
        t0 = time.perf_counter()
        res[mode] = scorer.score(problems, paras, mode)
        secs[mode] = time.perf_counter() - t0
    n = len(traces)
    normal = {m: [cut_positions(o.p_result or [], len(p)).normal for o, p in zip(res[m], paras)] for m in res}
    exact = sum(x == y for x, y in zip(normal["forward"], normal["generate"])) / n
    near = sum(abs(x - y) <= 1 for x, y in zip(normal["forward"], normal["generate"])) / n
    labelled = {m: sum(len(o.p_result or []) for o in res[m]) / max(1, sum(len(p) for p in paras)) for m in res}
    print(f"{n} traces from {os.path.basename(a.traces)}, {sum(len(p) for p in paras)} paragraphs, "
          f"thinking cut at {a.max_think_tokens} tokens, reflection model {a.model}")
    print(f"{'mode':10}{'seconds':>10}{'traces/s':>10}{'labels read':>13}")
    for m in ("forward", "generate"):
        print(f"{m:10}{secs[m]:>10.1f}{n / secs[m]:>10.3f}{100 * labelled[m]:>12.0f}%")
    print(f"speed-up (forward over generate): {secs['generate'] / secs['forward']:.2f}x")
    print(f"Normal cut agreement: {100 * exact:.0f}% exact, {100 * near:.0f}% within one paragraph")
    return 0


if __name__ == "__main__":
    sys.exit(main())
