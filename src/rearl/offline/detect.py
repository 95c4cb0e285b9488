"""`rearl detect`: run one detector (oracle, reflection model, first reflection, fixed ratio) over a
file of traces; one JSONL record per trace (resumable) and a summary of how much thinking each cut
removes and whether the kept part still holds the answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rearl.core.detectors import (
    DETECTORS,
    Detection,
    Mention,
    answer_mentions,
    correct_mentions,
    first_reflection_detect,
    model_detect,
    oracle_detect,
    ratio_detect,
)
from rearl.core.positions import POSITIONS
from rearl.core.reflection import REGEX_MODES
from rearl.core.text import Segmentation
from rearl.core.verify import VerifierPool, default_pool
from rearl.options import option
from rearl.reflector.prompt import SCORING_MODES, ScoreOutcome


# -- running a detector over a trace file -----------------------------------------------------------
@dataclass
class DetectConfig:
    """Options of `rearl detect` (and `detect_file`)."""

    input: str = option(help="traces JSONL")
    out: str = option(help="output JSONL, one record per trace (resumable)")
    tokenizer: str = option(help="the policy's tokenizer (path), for token counts and spans")
    detector: str = option("oracle", "which detector finds the cut: oracle (uses the gold answer: the paragraphs "
                           "where a correct answer is stated; a free teacher), model (a reflection model), "
                           "first-reflection (before the first 'wait'-like word), ratio (keep a fixed fraction)",
                           choices=DETECTORS)
    position: str = option("normal", "where to cut among the answer paragraphs: strong (earliest likely answer), "
                           "normal (the paper's: the first answer in the second half), weak (after a second "
                           "answer) (docs/method.md#cut-positions)", choices=POSITIONS)
    second_half: bool = option(True, "let first-half paragraphs count for normal/weak", flag="--no-second-half")
    ratio: float = option(0.5, "fraction kept by the ratio detector")
    regex: str = option("authors", "reflection keyword matcher", choices=REGEX_MODES)
    model: str | None = option(None, "reflection model for --detector model: path, 'default' (embedded) or server URL")
    mode: str = option("forward", "reflection scoring: one teacher-forced pass (forward) or greedy label generation "
                       "(generate)", choices=SCORING_MODES)
    reflection_tokenizer: str | None = option(None, "tokenizer path of a served reflection model (default: its name)")
    window_tokens: int | None = option(
        None, "--detector model: score windows of paragraphs within this many tokens (default: as the model was "
        "trained, see its rearl_reflector.json; 0: the whole trace)")
    batch_size: int = option(4, "traces per reflection-model call")
    device: str = option("cpu", "cpu | cuda")
    problem_field: str | None = option(None, "problem/question field (auto: problem, question, prompt)")
    answer_field: str | None = option(None, "gold answer field (auto: answer, gold_answer, gt_answer, gold, final_answer)")
    response_field: str | None = option(
        None, "response field (auto: response, completion, output, generated_responses, solution, thinking)")
    max_think_tokens: int | None = option(None, "truncate the thinking before splitting")
    limit: int | None = option(None, "only the first N traces")
    force: bool = option(False, "start --out fresh when it holds a run of other input or settings (default: refuse)")

    def check(self) -> None:
        """Flag values, checked before anything is read or loaded."""
        from rearl.core.io import check_local_path, refuse_same_path

        if not 0 < self.ratio <= 1:
            raise ValueError(f"--ratio must be in (0, 1] (the fraction of thinking kept), got {self.ratio:g}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        refuse_same_path(self.out, [self.input])
        check_local_path(self.tokenizer, "--tokenizer")
        check_local_path(self.reflection_tokenizer, "--reflection-tokenizer")


# the settings a detect run's records depend on: a resume must have the same ones
_RECORD_SETTINGS = ("tokenizer", "detector", "position", "second_half", "ratio", "regex", "model", "mode",
                    "window_tokens", "problem_field", "answer_field", "response_field", "max_think_tokens")


def _cut_entry(seg: Segmentation, paragraph: int | None, char_end: int) -> dict[str, Any]:
    a, _ = seg.think_token_span
    kept = max(0, seg.tokens.tokens_ending_by(char_end) - a) if char_end > seg.split.think_start else 0
    return {"paragraph": paragraph, "char_end": char_end, "kept_think_tokens": min(kept, seg.think_tokens)}


def detection_record(
    seg: Segmentation, det: Detection, gold: str | None, ok: Sequence[Mention] | None, pool: VerifierPool | None = None,
    label: str = "cut",
) -> dict[str, Any]:
    """One output record (without the id) for one segmented trace and its detection."""
    from rearl.core.verify import check_completions

    s = seg.split
    think = seg.think_tokens
    main = _cut_entry(seg, det.cut_paragraph, det.kept_char_end)
    kept = main["kept_think_tokens"]
    if det.positions is not None:
        cuts = {name: _cut_entry(seg, det.positions.get(name), seg.paragraphs[det.positions.get(name)].char_end)
                for name in ("strong", "normal", "weak")}
    else:
        cuts = {label: main}
    rec: dict[str, Any] = {
        "n_paragraphs": len(seg.paragraphs),
        "cut_paragraph": det.cut_paragraph,
        "think_tokens": think,
        "kept_think_tokens": kept,
        "removed_fraction": (think - kept) / think if think else 0.0,
        "total_tokens": len(seg.tokens),
        "think_status": s.status,
        "cuts": cuts,
    }
    if det.positions is not None:
        rec["positions_found"] = det.positions.found
    if det.p_result is not None:
        rec["p_result"] = [round(float(x), 4) for x in det.p_result]
    if det.result_paragraphs:
        rec["result_paragraphs"] = det.result_paragraphs
    if gold is not None:
        ok = list(ok or [])
        rec["gold"] = gold
        rec["answer_in_kept"] = any(m.pos < det.kept_char_end for m in ok)
        for c in cuts.values():
            c["answer_in_kept"] = any(m.pos < c["char_end"] for m in ok)
        rec["first_answer_paragraph"] = next(
            (p.index for p in seg.paragraphs for m in ok[:1] if p.char_start <= m.pos < p.char_end), None
        )
        rec["final_correct"] = check_completions([seg.text], [gold], pool=pool)[0].ok
    return rec


def summarize_detections(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if "error" not in r]
    with_gold = [r for r in ok if "answer_in_kept" in r]
    correct = [r for r in with_gold if r.get("final_correct")]

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {
        "traces": len(records),
        "failures": len(records) - len(ok),
        "mean_think_tokens": mean([r["think_tokens"] for r in ok]),
        "mean_kept_think_tokens": mean([r["kept_think_tokens"] for r in ok]),
        "mean_pct_think_removed": mean([100 * r["removed_fraction"] for r in ok]),
        "pct_think_removed_total": (
            100 * (1 - sum(r["kept_think_tokens"] for r in ok) / max(1, sum(r["think_tokens"] for r in ok)))
            if ok else None
        ),
        "traces_with_gold": len(with_gold),
        "pct_answer_kept": mean([100.0 * r["answer_in_kept"] for r in with_gold]),
        "originally_correct": len(correct),
        "pct_answer_kept_of_correct": mean([100.0 * r["answer_in_kept"] for r in correct]),
        "mean_pct_think_removed_of_correct": mean([100 * r["removed_fraction"] for r in correct]),
    }


def detect_file(cfg: DetectConfig, progress: bool = True, scorer: Any = None) -> dict[str, Any]:
    """Run a detector over every trace of `cfg.input`, appending to `cfg.out` (resumable).

    Returns the summary, also written to `<out>.summary.json` (with the settings `rearl revise`
    needs). `scorer` may be passed to reuse a loaded reflection model.
    """
    from transformers import AutoTokenizer

    from rearl.core.io import ResumableJsonl, write_json_atomic
    from rearl.core.text import ThinkTags, segment
    from rearl.core.traces import load_traces

    from rearl.core.io import file_fingerprint, resume_or_refuse

    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown detector {cfg.detector!r}; choose one of {DETECTORS}")
    cfg.check()
    traces = list(load_traces(cfg.input, cfg.problem_field, cfg.answer_field, cfg.response_field, cfg.limit))
    settings = {"input": file_fingerprint(cfg.input), **{k: getattr(cfg, k) for k in _RECORD_SETTINGS}}
    if cfg.detector != "ratio":
        settings.pop("ratio")
    resume_or_refuse(cfg.out, settings, cfg.force, extra=[summary_path(cfg.out)])
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    tags = ThinkTags.from_tokenizer(tok)
    if cfg.detector == "oracle" and any(t.answer is None for t in traces):
        missing = next(t for t in traces if t.answer is None)
        raise ValueError(f"{missing.source}: the oracle detector needs a gold answer; set --answer-field")
    if cfg.detector == "model" and scorer is None:
        from rearl.backends import reflection_scorer

        if not cfg.model:
            raise ValueError("--detector model needs --model (a path, 'default' for the embedded model, or a server URL)")
        scorer = reflection_scorer(cfg.model, tokenizer=cfg.reflection_tokenizer, batch_size=cfg.batch_size,
                                   device=cfg.device)
        from rearl.reflector.window import windowed

        scorer = windowed(scorer, cfg.model, cfg.window_tokens, tok)
    pool = default_pool()
    label = {"first-reflection": "first-reflection", "ratio": f"ratio{cfg.ratio:g}"}.get(cfg.detector, "cut")
    uses_position = cfg.detector in ("oracle", "model")
    chunk_size = cfg.batch_size if cfg.detector == "model" else 1
    with ResumableJsonl(cfg.out) as out:
        todo = [t for t in traces if out.pending(t.id)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(traces), initial=len(traces) - len(todo), desc=f"detect ({cfg.detector})", unit="trace")
        for k in range(0, len(todo), chunk_size):
            chunk = todo[k : k + chunk_size]
            segs: list[Segmentation | Exception] = []
            for t in chunk:
                try:
                    segs.append(segment(tok, text=t.response, tags=tags, max_think_tokens=cfg.max_think_tokens))
                except Exception as e:  # noqa: BLE001
                    segs.append(e)
            scores = None
            if cfg.detector == "model":
                live = [(t, sg) for t, sg in zip(chunk, segs) if isinstance(sg, Segmentation)]
                try:
                    res = scorer.score([t.problem for t, _ in live], [[p.text for p in sg.paragraphs] for _, sg in live],
                                       cfg.mode)
                except Exception as e:  # noqa: BLE001 - a scorer crash fails this chunk's traces, not the run
                    res = [ScoreOutcome(None, len(sg.paragraphs), error=f"{type(e).__name__}: {e}") for _, sg in live]
                scores = {t.id: r for (t, _), r in zip(live, res)}
            for t, sg in zip(chunk, segs):
                base = {"id": t.id, "detector": cfg.detector, "position": cfg.position if uses_position else None}
                try:
                    if isinstance(sg, Exception):
                        raise sg
                    ok = None
                    if t.answer is not None:
                        ok = correct_mentions(answer_mentions(sg.text, sg.split.think_start, sg.split.think_end), t.answer, pool)
                    if cfg.detector == "oracle":
                        det = oracle_detect(sg, t.answer, position=cfg.position, second_half=cfg.second_half, mentions_ok=ok)
                    elif cfg.detector == "model":
                        sc = scores[t.id]
                        if sc.error is not None:
                            raise RuntimeError(f"reflection model: {sc.error}")
                        det = model_detect(sg, sc.p_result or [], position=cfg.position, second_half=cfg.second_half)
                    elif cfg.detector == "first-reflection":
                        det = first_reflection_detect(sg, regex=cfg.regex)
                    else:
                        det = ratio_detect(sg, ratio=cfg.ratio)
                    rec = {**base, **detection_record(sg, det, t.answer, ok, pool, label)}
                    if cfg.detector == "model":
                        rec["scoring_seconds"] = round(scores[t.id].seconds, 3)
                        rec["labelled_paragraphs"] = scores[t.id].n_shown
                except Exception as e:  # noqa: BLE001 - one bad trace is reported, not fatal
                    rec = {**base, "error": f"{type(e).__name__}: {e}"}
                out.write(rec)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        ids = {t.id for t in traces}
        records = [r for r in out.records() if str(r["id"]) in ids]
    summary = {
        "input": cfg.input, "tokenizer": cfg.tokenizer, "detector": cfg.detector,
        "position": cfg.position if uses_position else None,
        "fields": {"problem": cfg.problem_field, "answer": cfg.answer_field, "response": cfg.response_field},
        **({"model": cfg.model, "mode": cfg.mode} if cfg.detector == "model" else {}),
        **summarize_detections(records),
    }
    write_json_atomic(summary_path(cfg.out), summary)
    return summary


def summary_path(out: str) -> str:
    return out[: -len(".jsonl")] + ".summary.json" if out.endswith(".jsonl") else out + ".summary.json"
