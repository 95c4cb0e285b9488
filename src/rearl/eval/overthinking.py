"""How much a set of reasoning traces overthinks: `rearl measure` on any JSONL of traces.

Per trace (the oracle's mention finder locates the first correct answer in the thinking):

* paragraphs (the REA-RL splitter, docs/method.md#paragraphs);
* removable overthinking: the share of thinking tokens after the first correct answer;
* reflection density (reflection words per 1,000 thinking tokens) before and after that point,
  and the reflections after it;
* whether the final answer is correct.

The summary gives median, p10 and p90 of each over the correct traces (the overthinking
statistics only mean something there) and the accuracy over all, overall and by `level`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from rearl.core.answers import EXTRACT_MODES
from rearl.core.detectors import answer_mentions, correct_mentions
from rearl.core.reflection import REGEX_MODES, count_reflections, percentile
from rearl.core.text import ThinkTags, segment
from rearl.core.traces import load_traces
from rearl.core.verify import check_completions, default_pool
from rearl.options import option

STATS = ("paragraphs", "removable_share", "density_before", "density_after", "reflections_after")


@dataclass
class MeasureConfig:
    """Options of `rearl measure`."""

    input: list[str] = option(help="traces JSONL with gold answers (repeat for several files)")
    tokenizer: str = option(help="the model's tokenizer (path): token counts and paragraphs")
    out: str | None = option(None, "write the per-trace records and the summary as JSON here")
    regex: str = option("authors", "reflection keyword matcher", choices=REGEX_MODES)
    extraction: str = option("answer_part", "where the final answer is read: answer_part (the last \\boxed{} after "
                             "</think>, the paper), last_boxed_anywhere (the authors' code), math_verify "
                             "(docs/method.md#accuracy-reward)", choices=EXTRACT_MODES)
    problem_field: str | None = option(None, "problem/question field (auto: problem, question, prompt)")
    answer_field: str | None = option(None, "gold answer field (auto: answer, gold_answer, gt_answer, gold, final_answer)")
    response_field: str | None = option(
        None, "response field (auto: response, completion, output, generated_responses, solution, thinking)")
    limit: int | None = option(None, "only the first N traces of each file")


def measure_trace(tok: Any, text: str, gold: str, *, tags: ThinkTags, regex: str = "authors", pool: Any = None
                  ) -> dict[str, Any]:
    """The statistics of one trace (see the module docstring); `None` where undefined."""
    seg = segment(tok, text=text, tags=tags)
    s = seg.split
    a, b = seg.think_token_span
    think = b - a
    ok = correct_mentions(answer_mentions(seg.text, s.think_start, s.think_end), gold, pool)
    rec: dict[str, Any] = {"paragraphs": len(seg.paragraphs), "think_tokens": think,
                           "reflections": count_reflections(s.think, regex)}
    if not ok or think <= 0:  # no correct answer inside the thinking: nothing after it to remove
        rec.update(removable_share=0.0 if think > 0 else None, reflections_after=0, density_after=None,
                   density_before=1000.0 * rec["reflections"] / think if think > 0 else None)
        return rec
    pos = ok[0].pos
    before = max(0, seg.tokens.tokens_ending_by(pos + 1) - a)
    after = think - before
    r_before = count_reflections(seg.text[s.think_start:pos], regex)
    r_after = count_reflections(seg.text[pos:s.think_end], regex)
    rec.update(removable_share=after / think, reflections_after=r_after,
               density_before=1000.0 * r_before / before if before else None,
               density_after=1000.0 * r_after / after if after else None)
    return rec


def _bands(recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    correct = [r for r in recs if r["correct"]]
    out: dict[str, Any] = {"traces": len(recs), "correct": len(correct),
                           "accuracy": 100.0 * len(correct) / len(recs) if recs else None}
    for k in STATS:
        xs = [r[k] for r in correct if r.get(k) is not None]
        out[k] = ({"median": percentile(xs, 50), "p10": percentile(xs, 10), "p90": percentile(xs, 90), "n": len(xs)}
                  if xs else None)
    return out


def measure(cfg: MeasureConfig, progress: bool = True) -> dict[str, Any]:
    """Records per trace and the summary (overall and by level) for every input file."""
    from transformers import AutoTokenizer

    from rearl.core.io import check_local_path, refuse_same_path

    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {cfg.limit}")
    refuse_same_path(cfg.out, cfg.input)
    check_local_path(cfg.tokenizer, "--tokenizer")
    # every file read before the tokenizer loads: a bad or empty one fails at once
    per_file = {path: list(load_traces(path, cfg.problem_field, cfg.answer_field, cfg.response_field, cfg.limit))
                for path in cfg.input}
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    tags = ThinkTags.from_tokenizer(tok)
    pool = default_pool()
    files: dict[str, Any] = {}
    for path in cfg.input:
        traces = per_file[path]
        missing = next((t for t in traces if t.answer is None), None)
        if missing is not None:
            raise ValueError(f"{missing.source}: no gold answer; measuring overthinking needs one (--answer-field)")
        finals = check_completions([t.response for t in traces], [t.answer for t in traces], mode=cfg.extraction,
                                   tags=tags, pool=pool)
        it = traces
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(traces, desc=f"measure {path.rsplit('/', 1)[-1]}", unit="trace")
        recs = []
        for t, fin in zip(it, finals):
            r = measure_trace(tok, t.response, t.answer, tags=tags, regex=cfg.regex, pool=pool)
            recs.append({"id": t.id, "level": t.level, "correct": bool(fin.ok), **r})
        levels: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in recs:
            if r["level"] is not None:
                levels[r["level"]].append(r)
        files[path] = {"all": _bands(recs), "by_level": {k: _bands(v) for k, v in sorted(levels.items())},
                       "records": recs}
    result = {"tokenizer": cfg.tokenizer, "regex": cfg.regex, "files": files}
    if cfg.out:
        from rearl.core.io import write_json_atomic

        write_json_atomic(cfg.out, result)
    return result


def _cell(b: dict[str, Any] | None, digits: int) -> str:
    if not b:
        return "-"
    f = f"{{:.{digits}f}}"
    return f"{f.format(b['median'])} [{f.format(b['p10'])}, {f.format(b['p90'])}]"


def markdown(result: dict[str, Any]) -> str:
    """One row per file (and level): median [p10, p90] over correct traces, accuracy over all."""
    lines = ["| traces | n | acc. % | paragraphs | removable share | refl./1k before | refl./1k after | "
             "refl. after 1st correct |", "|---|---|---|---|---|---|---|---|"]
    for path, f in result["files"].items():
        name = path.rsplit("/", 1)[-1]
        rows = [(name, f["all"])] + [(f"{name} L{k}", v) for k, v in f["by_level"].items()]
        for label, b in rows:
            acc = "-" if b["accuracy"] is None else f"{b['accuracy']:.1f}"
            lines.append(f"| {label} | {b['traces']} | {acc} | {_cell(b['paragraphs'], 0)} | "
                         f"{_cell(b['removable_share'], 2)} | {_cell(b['density_before'], 1)} | "
                         f"{_cell(b['density_after'], 1)} | {_cell(b['reflections_after'], 0)} |")
    return "\n".join(lines)
