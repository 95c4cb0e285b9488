"""Math benchmarks: where each file keeps its question and its gold answer (shared/data/PROVENANCE.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .answers import last_boxed
from .io import DataError, read_jsonl
from .traces import gold_from_field


@dataclass(frozen=True)
class Benchmark:
    name: str
    file: str
    question_field: str
    gold: Callable[[dict[str, Any]], str | None]
    samples: int = 1  # spec §6.3: 8 samples for AIME/AMC, 1 otherwise
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


def load_benchmark(name: str, data_dir: str | os.PathLike | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield {"id", "problem", "answer", "level", **original fields} for one benchmark.

    `level` is the difficulty level for benchmarks that have one (else None).
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
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
