"""Overthinking detection on reasoning traces: where was the answer already reached?

Detectors (all return a cut in the thinking part; paragraphs from the §2.2 splitter):

* ``model``: a reflection model reads the paragraphs and gives P(Result) per paragraph
  (spec §2.3-2.4, `rearl.backends`); the Strong/Normal/Weak policy picks the cut.
* ``oracle``: uses the gold answer. A paragraph is a "Result" paragraph when it states an answer
  (a box, "the answer is ...", the right-hand side of a final equality, a number alone on a line)
  that the verifier accepts; the Strong/Normal/Weak policy of spec §2.5 then picks the cut.
* ``first-reflection``: naive baseline asked for by reviewers: cut right before the first
  reflection keyword that follows the first answer-like statement (no gold needed).
* ``ratio``: the paper's fixed-proportion baseline: cut at the newline nearest to a fraction r of
  the thinking tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .answers import _box_contents, clean_answer
from .normalize import quick_compare
from .positions import CutPositions, cut_positions
from .reflection import reflection_pattern
from .text import Segmentation
from .verify import VerifierPool, default_pool

DETECTORS = ("oracle", "model", "first-reflection", "ratio")

_NUM = r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
_ANSWER_IS = re.compile(r"(?i)\banswer\s*(?:is|:|=|would be|should be|must be)\s*:?\s*([^\n]{1,80})")
_IS_NUMBER = re.compile(rf"\b(?:is|are|equals|gives|get|got|be)\s+\$?\\?\(?\s*({_NUM})\s*\$?\\?\)?\s*(?:[.!;]|$)", re.M)
_EQ_LINE = re.compile(r"=\s*([^=\n]{1,60})$", re.M)
_ALONE = re.compile(r"^[\s$*\\\[\]()]*(" + _NUM + r")[\s$*\\\[\]().]*$", re.M)
_STRIP = re.compile(r"^(?:\$+|\\\(|\\\[|\*\*)+|(?:\$+|\\\)|\\\]|\*\*|[.,;:!])+$")


@dataclass(frozen=True)
class Mention:
    pos: int  # character position in the completion text
    answer: str


def _clean(s: str) -> str:
    s = s.strip()
    prev = None
    while prev != s:
        prev = s
        s = _STRIP.sub("", s).strip()
    return clean_answer(s)


def answer_mentions(text: str, start: int = 0, end: int | None = None) -> list[Mention]:
    """Answer-like statements in text[start:end], in order of position (deduplicated)."""
    end = len(text) if end is None else end
    region = text[start:end]
    found: dict[tuple[int, str], None] = {}

    def add(pos: int, ans: str) -> None:
        ans = _clean(ans)
        if ans and len(ans) <= 80:
            found[(start + pos, ans)] = None

    for pos, content in _box_contents(region):
        add(pos, content)
    for m in _ANSWER_IS.finditer(region):
        tail = re.split(r"(?<=[^\d])\.(?:\s|$)|\.$", m.group(1))[0]
        box = _box_contents(tail)
        add(m.start(), box[-1][1] if box else tail)
    for m in _IS_NUMBER.finditer(region):
        add(m.start(1), m.group(1).replace(",", ""))
    for m in _EQ_LINE.finditer(region):
        rhs = re.split(r"(?<=[^\d])\.\s|,\s|\s(?:so|which|and|then)\s", m.group(1))[0]
        add(m.start(1), rhs)
    for m in _ALONE.finditer(region):
        add(m.start(1), m.group(1).replace(",", ""))
    return [Mention(p, a) for p, a in sorted(found)]


def correct_mentions(mentions: Sequence[Mention], gold: str, pool: VerifierPool | None = None) -> list[Mention]:
    """The mentions equivalent to `gold` (integers and exact matches decided here, the rest in the pool)."""
    pool = pool or default_pool()
    verdicts: list[Any] = []
    for m in mentions:
        q = quick_compare(gold, m.answer)
        verdicts.append(q if q is not None else pool.submit(gold, m.answer))
    return [m for m, v in zip(mentions, verdicts) if (v if isinstance(v, bool) else v.result().ok)]


@dataclass
class Detection:
    cut_paragraph: int | None  # last paragraph (partly) kept
    kept_char_end: int  # the kept thinking ends here (exclusive) in the completion text
    positions: CutPositions | None = None
    p_result: list[float] | None = None
    result_paragraphs: list[int] = field(default_factory=list)


def _paragraph_of(seg: Segmentation, char: int) -> int | None:
    """The paragraph that holds character `char`, or the last one that ends before it."""
    best = None
    for p in seg.paragraphs:
        if p.char_start <= char:
            best = p.index
        else:
            break
    return best


def model_detect(seg: Segmentation, p_result: Sequence[float], *, position: str = "normal",
                 second_half: bool = True) -> Detection:
    """Cut from a reflection model's P(Result) per paragraph (possibly fewer values than paragraphs)."""
    if not seg.paragraphs:
        return Detection(None, seg.split.think_start, p_result=list(p_result))
    pos = cut_positions(list(p_result), len(seg.paragraphs), second_half=second_half)
    assert pos is not None
    cut = pos.get(position)
    return Detection(cut, seg.paragraphs[cut].char_end, pos, list(p_result),
                     [i for i, p in enumerate(p_result) if p >= 0.5])


def oracle_detect(
    seg: Segmentation, gold: str | None, *, position: str = "normal", second_half: bool = True,
    mentions_ok: Sequence[Mention] | None = None, pool: VerifierPool | None = None,
) -> Detection:
    if not seg.paragraphs:
        return Detection(None, seg.split.think_start)
    if mentions_ok is None:
        if gold is None:
            raise ValueError("the oracle detector needs a gold answer")
        mentions_ok = correct_mentions(answer_mentions(seg.text, seg.split.think_start, seg.split.think_end), gold, pool)
    hit = {p.index for p in seg.paragraphs for m in mentions_ok if p.char_start <= m.pos < p.char_end}
    probs = [1.0 if i in hit else 0.0 for i in range(len(seg.paragraphs))]
    pos = cut_positions(probs, len(probs), second_half=second_half)
    assert pos is not None
    cut = pos.get(position)
    return Detection(cut, seg.paragraphs[cut].char_end, pos, probs, sorted(hit))


def first_reflection_detect(seg: Segmentation, *, regex: str = "authors") -> Detection:
    s = seg.split
    mentions = answer_mentions(seg.text, s.think_start, s.think_end)
    if not mentions:
        return Detection(_paragraph_of(seg, s.think_end - 1) if seg.paragraphs else None, s.think_end)
    pat = reflection_pattern(regex)
    m = pat.search(seg.text, mentions[0].pos, s.think_end)
    if m is None:
        return Detection(_paragraph_of(seg, s.think_end - 1), s.think_end)
    end = len(seg.text[: m.start()].rstrip())
    return Detection(_paragraph_of(seg, max(s.think_start, end - 1)), max(s.think_start, end))


def ratio_detect(seg: Segmentation, *, ratio: float = 0.5) -> Detection:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    s = seg.split
    a, b = seg.think_token_span
    if b <= a:
        return Detection(None, s.think_start)
    k = a + max(1, round(ratio * (b - a)))
    target = min(s.think_end, seg.tokens.ends[k - 1])
    newlines = [m.start() for m in re.finditer(r"\n", seg.text[s.think_start : s.think_end])]
    if newlines:
        end = s.think_start + min(newlines, key=lambda x: abs(s.think_start + x - target))
    else:
        end = target
    end = s.think_start + len(seg.text[s.think_start : end].rstrip())
    return Detection(_paragraph_of(seg, max(s.think_start, end - 1)), end)


# -- running a detector over a trace file -----------------------------------------------------------
@dataclass
class DetectConfig:
    """Options of `rearl detect` (and `detect_file`)."""

    input: str
    out: str
    tokenizer: str
    detector: str = "oracle"
    position: str = "normal"
    second_half: bool = True
    ratio: float = 0.5
    regex: str = "authors"
    model: str | None = None  # reflection model: path, "default" (embedded) or server URL
    mode: str = "forward"  # reflection scoring: forward | generate
    reflection_tokenizer: str | None = None  # for a server: the reflection model's tokenizer path
    window_tokens: int | None = None  # score in windows of paragraphs (None: as the model was trained; 0: whole trace)
    batch_size: int = 4
    device: str = "cpu"
    problem_field: str | None = None
    answer_field: str | None = None
    response_field: str | None = None
    max_think_tokens: int | None = None
    limit: int | None = None


def _cut_entry(seg: Segmentation, paragraph: int | None, char_end: int) -> dict[str, Any]:
    a, _ = seg.think_token_span
    kept = max(0, seg.tokens.tokens_ending_by(char_end) - a) if char_end > seg.split.think_start else 0
    return {"paragraph": paragraph, "char_end": char_end, "kept_think_tokens": min(kept, seg.think_tokens)}


def detection_record(
    seg: Segmentation, det: Detection, gold: str | None, ok: Sequence[Mention] | None, pool: VerifierPool | None = None,
    label: str = "cut",
) -> dict[str, Any]:
    """One output record (without the id) for one segmented trace and its detection."""
    from .verify import check_completions

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

    from .io import ResumableJsonl, write_json_atomic
    from .text import ThinkTags, segment
    from .traces import load_traces

    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown detector {cfg.detector!r}; choose one of {DETECTORS}")
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    tags = ThinkTags.from_tokenizer(tok)
    traces = list(load_traces(cfg.input, cfg.problem_field, cfg.answer_field, cfg.response_field, cfg.limit))
    if cfg.detector == "oracle" and any(t.answer is None for t in traces):
        missing = next(t for t in traces if t.answer is None)
        raise ValueError(f"{missing.source}: the oracle detector needs a gold answer; set --answer-field")
    if cfg.detector == "model" and scorer is None:
        from .backends import reflection_scorer

        if not cfg.model:
            raise ValueError("--detector model needs --model (a path, 'default' for the embedded model, or a server URL)")
        scorer = reflection_scorer(cfg.model, tokenizer=cfg.reflection_tokenizer, batch_size=cfg.batch_size,
                                   device=cfg.device)
        from .reflector_eval import windowed

        scorer = windowed(scorer, cfg.model, cfg.window_tokens, tok)
    pool = default_pool()
    label = {"first-reflection": "first-reflection", "ratio": f"ratio{cfg.ratio:g}"}.get(cfg.detector, "cut")
    uses_position = cfg.detector in ("oracle", "model")
    chunk_size = cfg.batch_size if cfg.detector == "model" else 1
    with ResumableJsonl(cfg.out) as out:
        todo = [t for t in traces if t.id not in out]
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
                res = scorer.score([t.problem for t, _ in live], [[p.text for p in sg.paragraphs] for _, sg in live], cfg.mode)
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
