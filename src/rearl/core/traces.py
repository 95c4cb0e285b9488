"""Loading reasoning traces from JSONL files with the field names people actually use."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Iterator

from rearl.core.answers import last_boxed
from rearl.core.io import DataError, read_jsonl

PROBLEM_FIELDS = ("problem", "question", "prompt")
ANSWER_FIELDS = ("answer", "gold_answer", "gt_answer", "gold", "final_answer")
RESPONSE_FIELDS = ("response", "completion", "output", "generated_responses", "responses", "solution", "thinking")
ID_FIELDS = ("id", "trace_id", "unique_id", "idx", "pid")


@dataclass
class Trace:
    id: str
    problem: str
    response: str
    answer: str | None
    source: str  # "file:line" for error messages
    level: str | None = None  # difficulty level, where the file has one (`level`)


def _pick(rec: dict[str, Any], explicit: str | None, candidates: tuple[str, ...], what: str, where: str) -> str | None:
    if explicit:
        if explicit not in rec:
            raise DataError(f"{where}: no field {explicit!r} (fields: {', '.join(sorted(rec))})")
        return explicit
    for c in candidates:
        if c in rec and rec[c] is not None:
            return c
    return None


def gold_from_field(value: Any) -> str | None:
    """Normalise a gold-answer field: GSM8K '#### x', MATH-style solutions, list reprs."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else None
    s = str(value).strip()
    if "####" in s:
        return s.rsplit("####", 1)[1].strip().replace(",", "")
    if "\\boxed" in s:
        b = last_boxed(s)
        if b is not None:
            return b
    if s.startswith("[") and s.endswith("]"):
        try:
            v = ast.literal_eval(s)
        except (ValueError, SyntaxError):
            v = None
        if isinstance(v, list):
            return ", ".join(str(x) for x in v) if v else None
    return s


def _responses(rec: dict[str, Any], field: str, where: str) -> list[str]:
    v = rec[field]
    if isinstance(v, str) and v.startswith("[") and field in ("generated_responses", "responses"):
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            raise DataError(f"{where}: field {field!r} looks like a list but does not parse") from None
    if isinstance(v, str):
        out = [v]
    elif isinstance(v, list) and all(isinstance(x, str) for x in v):
        out = list(v)
    else:
        raise DataError(f"{where}: field {field!r} must be a string or a list of strings, got {type(v).__name__}")
    if field == "thinking":
        # Traces stored as thinking + tail (the text inside <think> and the answer after it).
        tail = rec.get("tail") or ""
        out = [t + "\n</think>" + tail for t in out]
    return out


def load_traces(
    path: str,
    problem_field: str | None = None,
    answer_field: str | None = None,
    response_field: str | None = None,
    limit: int | None = None,
) -> Iterator[Trace]:
    """One Trace per response (a record with a list of responses gives several, ids `id#k`)."""
    n = 0
    for lineno, rec in read_jsonl(path):
        where = f"{path}:{lineno}"
        pf = _pick(rec, problem_field, PROBLEM_FIELDS, "problem", where)
        rf = _pick(rec, response_field, RESPONSE_FIELDS, "response", where)
        af = _pick(rec, answer_field, tuple(a for a in ANSWER_FIELDS if a != rf), "answer", where)
        if rf is None:
            raise DataError(f"{where}: no response field found (tried {', '.join(RESPONSE_FIELDS)}); use --response-field")
        if pf is None:
            raise DataError(f"{where}: no problem field found (tried {', '.join(PROBLEM_FIELDS)}); use --problem-field")
        idf = next((f for f in ID_FIELDS if f in rec), None)
        base = str(rec[idf]) if idf else str(lineno)
        responses = _responses(rec, rf, where)
        for k, resp in enumerate(responses):
            tid = base if len(responses) == 1 else f"{base}#{k}"
            level = rec.get("level")
            yield Trace(tid, str(rec[pf]), resp, gold_from_field(rec.get(af)) if af else None, where,
                        None if level is None else str(level))
            n += 1
            if limit is not None and n >= limit:
                return
    if n == 0:  # every command that reads traces has nothing to do: say so instead of printing an empty table
        raise DataError(f"{path}: no traces (the file is empty or holds only blank lines)")
