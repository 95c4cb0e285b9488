"""`rearl data filter`: keep the training problems a model solves at least once in N samples.

The authors trained on DeepScaleR filtered to the problems DeepSeek-R1-Distill-Qwen-7B answered
correctly at least once in 4 samples (their DeepScaleR_clean.json, not public): a problem no sample
solves gives an all-wrong group, which REA-RL's zero-advantage rule removes from the gradient anyway,
so unfiltered data spends rollouts on it. The sampling is `rearl eval`'s (any backend: in-process
transformers or the lean decoder, vLLM, a server), so it is resumable and its settings are checked on
resume; the output keeps every input record as it was (all fields), in input order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rearl.core.io import DataError, read_jsonl, write_json_atomic, write_text_atomic
from rearl.options import option


@dataclass
class FilterConfig:
    input: str = option(None, "training problems (JSONL with a problem and a gold answer field)", required=True)
    model: str = option(None, "the model that must solve them: a path, 'default' or an OpenAI-compatible server URL",
                        required=True)
    out: str = option(None, "the kept problems (JSONL); the samples go to OUT.work/ (resumable)", required=True)
    samples: int = option(4, "samples per problem (the authors: 4)")
    min_correct: int = option(1, "keep a problem with at least this many correct samples")
    max_tokens: int = option(8000, "generation budget per sample")
    temperature: float = option(0.6, "sampling temperature")
    top_p: float = option(0.95, "nucleus sampling")
    limit: int | None = option(None, "only the first N problems")
    backend: str = option("auto", "as rearl eval: auto, hf, lean, vllm or server")
    tokenizer: str | None = option(None, "tokenizer of a served model")
    device: str = option("cpu", "cpu | cuda")
    dtype: str | None = option(None, "model dtype")
    batch_size: int = option(8, "samples per generate call (transformers)")
    seed: int = option(2, "sampling seed")


def _problems(path: Path, limit: int | None) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """(line number, record) of the usable problems, and how many had no gold answer."""
    from rearl.core.traces import PROBLEM_FIELDS
    from rearl.eval.benchmarks import question_and_gold

    rows, no_gold = [], 0
    for n, (lineno, rec) in enumerate(read_jsonl(path)):
        if limit is not None and n >= limit:
            break
        qf, gold = question_and_gold(rec)
        if qf is None:
            raise DataError(f"{path}:{lineno}: no question field (tried {', '.join(PROBLEM_FIELDS)})")
        if gold is None or not str(gold).strip():
            no_gold += 1
            continue
        rows.append((lineno, rec))
    return rows, no_gold


def filter_file(cfg: FilterConfig, progress: bool = True, policy: Any = None, pool: Any = None) -> dict[str, Any]:
    from rearl.eval.run import EvalConfig, evaluate

    src, out = Path(cfg.input), Path(cfg.out)
    if src.resolve() == out.resolve():
        raise ValueError(f"--out {out} is the input file: the filter would overwrite what it reads")
    if cfg.samples < 1 or not 1 <= cfg.min_correct <= cfg.samples:
        raise ValueError(f"need samples >= 1 and 1 <= min_correct <= samples, got {cfg.samples} and {cfg.min_correct}")
    rows, no_gold = _problems(src, cfg.limit)
    if not rows:
        raise DataError(f"{src}: no problem with a gold answer")
    work = Path(str(out) + ".work")
    work.mkdir(parents=True, exist_ok=True)
    # the problems as a benchmark file whose ids are the input's line numbers
    bench = work / "problems.jsonl"
    text = "".join(json.dumps({**rec, "id": lineno}, ensure_ascii=False) + "\n" for lineno, rec in rows)
    if not bench.exists() or bench.read_text(encoding="utf-8") != text:
        write_text_atomic(bench, text)
    ecfg = EvalConfig(model=cfg.model, out=str(work / "samples"), benchmarks=[str(bench)], n=cfg.samples,
                      max_tokens=cfg.max_tokens, budgets=[cfg.max_tokens], temperature=cfg.temperature, top_p=cfg.top_p,
                      backend=cfg.backend, tokenizer=cfg.tokenizer, device=cfg.device, dtype=cfg.dtype,
                      batch_size=cfg.batch_size, seed=cfg.seed)
    evaluate(ecfg, progress=progress, policy=policy, pool=pool)
    correct: dict[int, int] = {}
    for _, s in read_jsonl(work / "samples" / "scores.jsonl"):
        lineno = int(s["key"].split(":")[1].rsplit("-", 1)[1])  # "problems:problems-<line>:<k>"
        correct[lineno] = correct.get(lineno, 0) + bool(s["budgets"][str(cfg.max_tokens)]["correct"])
    kept = [rec for lineno, rec in rows if correct.get(lineno, 0) >= cfg.min_correct]
    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    hist = {str(k): sum(1 for lineno, _ in rows if correct.get(lineno, 0) == k) for k in range(cfg.samples + 1)}
    summary = {"input": str(src), "out": str(out), "problems": len(rows), "without_gold": no_gold, "kept": len(kept),
               "kept_share": len(kept) / len(rows), "correct_samples_histogram": hist, "config": asdict(cfg)}
    write_json_atomic(Path(str(out) + ".summary.json"), summary)
    return summary
