"""Overthinking detection on reasoning traces: where was the answer already reached?

Detectors (all return a cut in the thinking part; paragraphs from the §2.2 splitter):

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

DETECTORS = ("oracle", "first-reflection", "ratio")

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


def make_detector(name: str, **opts: Any) -> Callable[[Segmentation, str | None, Sequence[Mention] | None], Detection]:
    if name == "oracle":
        return lambda seg, gold, ok: oracle_detect(
            seg, gold, position=opts.get("position", "normal"), second_half=opts.get("second_half", True), mentions_ok=ok
        )
    if name == "first-reflection":
        return lambda seg, gold, ok: first_reflection_detect(seg, regex=opts.get("regex", "authors"))
    if name == "ratio":
        return lambda seg, gold, ok: ratio_detect(seg, ratio=opts.get("ratio", 0.5))
    raise ValueError(f"unknown detector {name!r}; choose one of {DETECTORS}")


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
    problem_field: str | None = None
    answer_field: str | None = None
    response_field: str | None = None
    max_think_tokens: int | None = None
    limit: int | None = None


def detect_trace(seg: Segmentation, gold: str | None, detector: Callable, pool: VerifierPool | None = None) -> dict[str, Any]:
    """One output record (without the id) for one segmented trace."""
    from .verify import check_completions

    s = seg.split
    ok: list[Mention] | None = None
    if gold is not None:
        ok = correct_mentions(answer_mentions(seg.text, s.think_start, s.think_end), gold, pool)
    det: Detection = detector(seg, gold, ok)
    a, _ = seg.think_token_span
    kept = max(0, seg.tokens.tokens_ending_by(det.kept_char_end) - a) if det.kept_char_end > s.think_start else 0
    think = seg.think_tokens
    kept = min(kept, think)
    rec: dict[str, Any] = {
        "n_paragraphs": len(seg.paragraphs),
        "cut_paragraph": det.cut_paragraph,
        "think_tokens": think,
        "kept_think_tokens": kept,
        "removed_fraction": (think - kept) / think if think else 0.0,
        "total_tokens": len(seg.tokens),
        "think_status": s.status,
    }
    if det.positions is not None:
        rec["positions"] = {"strong": det.positions.strong, "normal": det.positions.normal, "weak": det.positions.weak,
                            "found": det.positions.found}
    if det.p_result is not None:
        rec["p_result"] = det.p_result
    if det.result_paragraphs:
        rec["result_paragraphs"] = det.result_paragraphs
    if gold is not None:
        rec["gold"] = gold
        rec["answer_in_kept"] = any(m.pos < det.kept_char_end for m in (ok or []))
        rec["first_answer_paragraph"] = next(
            (p.index for p in seg.paragraphs for m in (ok or [])[:1] if p.char_start <= m.pos < p.char_end), None
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


def detect_file(cfg: DetectConfig, progress: bool = True) -> dict[str, Any]:
    """Run a detector over every trace of `cfg.input`, appending to `cfg.out` (resumable).

    Returns the summary, also written to `<out>.summary.json`.
    """
    from transformers import AutoTokenizer

    from .io import ResumableJsonl, write_json_atomic
    from .text import ThinkTags, segment
    from .traces import load_traces

    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown detector {cfg.detector!r}; choose one of {DETECTORS}")
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    tags = ThinkTags.from_tokenizer(tok)
    detector = make_detector(cfg.detector, position=cfg.position, second_half=cfg.second_half, ratio=cfg.ratio,
                             regex=cfg.regex)
    traces = list(load_traces(cfg.input, cfg.problem_field, cfg.answer_field, cfg.response_field, cfg.limit))
    if cfg.detector == "oracle" and any(t.answer is None for t in traces):
        missing = next(t for t in traces if t.answer is None)
        raise ValueError(f"{missing.source}: the oracle detector needs a gold answer; set --answer-field")
    pool = default_pool()
    with ResumableJsonl(cfg.out) as out:
        todo = [t for t in traces if t.id not in out]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(traces), initial=len(traces) - len(todo), desc=f"detect ({cfg.detector})", unit="trace")
        for t in todo:
            base = {"id": t.id, "detector": cfg.detector, "position": cfg.position if cfg.detector == "oracle" else None}
            try:
                seg = segment(tok, text=t.response, tags=tags, max_think_tokens=cfg.max_think_tokens)
                rec = {**base, **detect_trace(seg, t.answer, detector, pool)}
            except Exception as e:  # one bad trace is reported, not fatal
                rec = {**base, "error": f"{type(e).__name__}: {e}"}
            out.write(rec)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        ids = {t.id for t in traces}
        records = [r for r in out.records() if str(r["id"]) in ids]
    summary = {"input": cfg.input, "detector": cfg.detector, "position": cfg.position, **summarize_detections(records)}
    write_json_atomic(summary_path(cfg.out), summary)
    return summary


def summary_path(out: str) -> str:
    return out[: -len(".jsonl")] + ".summary.json" if out.endswith(".jsonl") else out + ".summary.json"
