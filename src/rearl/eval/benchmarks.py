"""Math benchmarks: where each file keeps its question and its gold answer (shared/data/PROVENANCE.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from rearl.core.answers import last_boxed
from rearl.core.io import DataError, read_jsonl
from rearl.core.traces import gold_from_field


@dataclass(frozen=True)
class Benchmark:
    name: str
    file: str
    question_field: str
    gold: Callable[[dict[str, Any]], str | None]
    samples: int = 1  # docs/evaluation.md: 8 samples for AIME/AMC, 1 otherwise
    level_field: str | None = None  # difficulty levels, for per-level metrics (MATH500: 1-5)


def _field(name: str) -> Callable[[dict[str, Any]], str | None]:
    return lambda rec: gold_from_field(rec.get(name))


def _minerva(rec: dict[str, Any]) -> str | None:
    return last_boxed(rec.get("solution") or "")


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("gsm8k", "gsm8k_test.jsonl", "question", _field("answer")),
        Benchmark("math500", "math500.jsonl", "problem", _field("answer"), level_field="level"),
        Benchmark("gaokao2023en", "gaokao2023en.jsonl", "question", _field("answer")),
        Benchmark("amc23", "amc23.jsonl", "problem", _field("answer"), samples=8),
        Benchmark("aime24", "aime24.jsonl", "problem", _field("answer"), samples=8),
        Benchmark("aime25", "aime25.jsonl", "problem", _field("answer"), samples=8),
        Benchmark("olympiadbench", "olympiadbench.jsonl", "question", _field("final_answer")),
        Benchmark("minerva", "minerva_math.jsonl", "problem", _minerva),
        Benchmark("deepscaler_amc", "deepscaler_test_amc.jsonl", "problem", _field("answer"), samples=8),
    ]
}


def shared_dir() -> Path:
    """`$REARL_SHARED`, else `../shared` from the working directory."""
    return Path(os.environ.get("REARL_SHARED", "../shared")).resolve()


def default_data_dir() -> Path:
    return shared_dir() / "data" / "eval"


def is_file_benchmark(name: str) -> bool:
    """A benchmark given as a JSONL file path rather than a known name."""
    return name.endswith(".jsonl") or os.sep in name or "/" in name


def benchmark_label(name: str) -> str:
    """The name a benchmark carries in sample keys and summaries (a file's stem for a path)."""
    return Path(name).stem if is_file_benchmark(name) else name


def question_and_gold(rec: dict[str, Any]) -> tuple[str | None, str | None]:
    """A problem record's question field (the first of PROBLEM_FIELDS holding text) and its normalised gold
    answer (from the first of ANSWER_FIELDS present; None when there is none)."""
    from rearl.core.traces import ANSWER_FIELDS, PROBLEM_FIELDS

    qf = next((f for f in PROBLEM_FIELDS if isinstance(rec.get(f), str) and rec[f].strip()), None)
    af = next((f for f in ANSWER_FIELDS if rec.get(f) is not None), None)
    return qf, gold_from_field(rec.get(af)) if af else None


def load_jsonl_benchmark(path: str | os.PathLike, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """A user's benchmark file: one problem per line with a question field (problem/question/prompt),
    a gold field (answer/gold_answer/gt_answer/gold/final_answer; a boxed solution works too) and
    an optional `level` (per-level metrics). Ids are the file's `id` field or the line number."""
    from rearl.core.traces import ANSWER_FIELDS, PROBLEM_FIELDS

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such benchmark file (a benchmark is a known name or a JSONL path)")
    label = benchmark_label(str(path))
    for n, (lineno, rec) in enumerate(read_jsonl(path)):
        if limit is not None and n >= limit:
            return
        qf, gold = question_and_gold(rec)
        if qf is None:
            raise DataError(f"{path}:{lineno}: no question field (tried {', '.join(PROBLEM_FIELDS)})")
        if gold is None:
            raise DataError(f"{path}:{lineno}: no gold answer (tried {', '.join(ANSWER_FIELDS)})")
        rid = rec.get("id")
        yield {**rec, "id": f"{label}-{rid if rid is not None else lineno}", "problem": rec[qf], "answer": gold,
               "level": rec.get("level")}


def load_benchmark(name: str, data_dir: str | os.PathLike | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield {"id", "problem", "answer", "level", **original fields} for one benchmark.

    `name` is a known benchmark (a file of `data_dir`) or the path of a JSONL file of your own
    (see `load_jsonl_benchmark`). `level` is the difficulty level where the data has one (else None).
    """
    if is_file_benchmark(name):
        yield from load_jsonl_benchmark(name, limit)
        return
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)} or give a JSONL path")
    b = BENCHMARKS[name]
    path = Path(data_dir or default_data_dir()) / b.file
    for n, (lineno, rec) in enumerate(read_jsonl(path)):
        if limit is not None and n >= limit:
            return
        gold = b.gold(rec)
        if gold is None:
            raise DataError(f"{path}:{lineno}: no gold answer")
        if not isinstance(rec.get(b.question_field), str) or not rec[b.question_field].strip():
            raise DataError(f"{path}:{lineno}: field {b.question_field!r} (the question) is missing or empty")
        level = rec.get(b.level_field) if b.level_field else None
        yield {**rec, "id": f"{name}-{lineno}", "problem": rec[b.question_field], "answer": gold, "level": level}
