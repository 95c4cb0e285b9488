"""Quality report of a reflection model against teacher labels on held-out traces.

For every method the Normal cut (docs/method.md#cut-positions, the one online RL uses) is compared with the cut the
teacher's labels give: exact and ±1-paragraph agreement, mean distance; Result paragraphs
(P(Result) >= 0.5) against the teacher's, as precision/recall; the share of thinking tokens the cut
removes; and, with a gold answer, how often the kept part still holds a correct answer (among
traces whose thinking has one at all). Methods side by side: the trained model (windowed like its
training examples, and over the whole trace as `rearl detect --detector model` runs it), optionally
an untrained base model, the oracle, the naive baselines (first reflection after the first answer,
fixed ratio, also at the model's own budget as the paper compares it) and "no Result" (every
paragraph Think, so Normal falls back to the cap)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from rearl.core.io import DataError, write_json_atomic, write_text_atomic
from rearl.core.positions import POSITIONS
from rearl.options import option
from rearl.reflector.prompt import SCORING_MODES
from rearl.reflector.window import WindowedScorer, model_window


@dataclass
class EvalConfig:
    """Options of `rearl reflector eval`."""

    model: str = option(help="the trained reflection model (directory)")
    labels: str = option(help="held-out label JSONL")
    out: str | None = option(None, "report prefix (default MODEL/eval_<labels>): writes .md and .json")
    base_model: str | None = option(None, "also report an untrained model, e.g. 'default'")
    mode: str = option("forward", "reflection scoring mode", choices=SCORING_MODES)
    window_tokens: int | None = option(None, "score in windows (default: as trained; 0: whole trace only)")
    whole_trace: bool = option(True, "skip scoring over the whole trace", flag="--no-whole-trace")
    ratios: list[float] = option(default_factory=lambda: [0.5], help="fixed-ratio baseline(s): the fraction of thinking kept",
                                 flag="--ratio")
    position: str = option("normal", "cut policy", choices=POSITIONS)
    second_half: bool = option(True, "let first-half paragraphs count for normal/weak", flag="--no-second-half")
    device: str = option("cpu", "cpu | cuda")
    batch_size: int = option(4, "traces per reflection-model call")
    max_context: int | None = option(None, "reflection prompt budget (default: the model's context)")
    num_threads: int | None = option(None, "torch CPU threads", flag="--threads")


@dataclass
class _Trace:
    rec: dict[str, Any]
    seg: Any
    paragraphs: list[str]
    ok: list[Any] | None  # correct answer mentions (None without gold)
    teacher_cut: int
    teacher_result: set[int]


def _prepare(records: Sequence[dict[str, Any]], position: str, second_half: bool) -> list[_Trace]:
    """Re-segment every labelled trace from its input file, checking it matches the labels."""
    from transformers import AutoTokenizer

    from rearl.core.detectors import answer_mentions, correct_mentions
    from rearl.core.positions import cut_positions
    from rearl.core.text import ThinkTags, segment
    from rearl.core.traces import load_traces
    from rearl.core.verify import default_pool

    toks: dict[str, Any] = {}
    files: dict[str, dict[str, Any]] = {}
    pool = default_pool()
    out = []
    for r in records:
        for f in ("input", "id", "tokenizer"):
            if f not in r:
                raise DataError(f"label record {r.get('key')!r} has no {f!r} field (made by an older labeller?)")
        if r["input"] not in files:
            if not Path(r["input"]).exists():
                raise DataError(f"label record {r['key']!r}: its traces file {r['input']} is missing")
            files[r["input"]] = {t.id: t for t in load_traces(r["input"])}
        t = files[r["input"]].get(str(r["id"]))
        if t is None:
            raise DataError(f"{r['input']}: no trace {r['id']!r} (label record {r['key']!r})")
        tok = toks.get(r["tokenizer"]) or toks.setdefault(r["tokenizer"], AutoTokenizer.from_pretrained(r["tokenizer"]))
        seg = segment(tok, text=t.response, tags=ThinkTags.from_tokenizer(tok), max_think_tokens=r.get("max_think_tokens"))
        paras = [p.text for p in seg.paragraphs]
        if len(paras) != r["n_paragraphs"] or (r.get("paragraphs") is not None and r["paragraphs"] != paras):
            raise DataError(f"label record {r['key']!r}: the trace now splits into {len(paras)} paragraphs, "
                            f"the labels were made on {r['n_paragraphs']}")
        gold = r.get("answer")
        ok = None
        if gold is not None:
            ok = correct_mentions(answer_mentions(seg.text, seg.split.think_start, seg.split.think_end), gold, pool)
        result = set(r["result_paragraphs"])
        pos = cut_positions(_indicator(result, len(paras)), len(paras), second_half=second_half)
        if pos is None:
            continue  # no thinking at all: nothing to cut, nothing to compare
        out.append(_Trace(r, seg, paras, ok, pos.get(position), result))
    return out


def _outcome(tr: _Trace, cut: int | None, char_end: int, pred: set[int] | None) -> dict[str, Any]:
    from rearl.offline.detect import _cut_entry

    kept = _cut_entry(tr.seg, cut, char_end)["kept_think_tokens"]
    think = tr.seg.think_tokens
    return {
        "cut": cut, "kept_think_tokens": kept, "removed": (think - kept) / think if think else 0.0,
        "answer_kept": None if not tr.ok else any(m.pos < char_end for m in tr.ok),
        "pred_result": sorted(pred) if pred is not None else None,
    }


def _indicator(result: set[int], n: int) -> list[float]:
    return [1.0 if i in result else 0.0 for i in range(n)]


def _from_probs(tr: _Trace, probs: Sequence[float], position: str, second_half: bool) -> dict[str, Any]:
    from rearl.core.detectors import model_detect

    det = model_detect(tr.seg, probs, position=position, second_half=second_half)
    out = _outcome(tr, det.cut_paragraph, det.kept_char_end, {i for i, p in enumerate(probs) if p >= 0.5})
    out["p_result"] = [round(float(x), 4) for x in probs] + [0.0] * (len(tr.paragraphs) - len(probs))
    return out


def metrics(traces: Sequence[_Trace], outs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    pairs = [(t, o) for t, o in zip(traces, outs) if o is not None and o.get("cut") is not None]
    n = len(pairs)

    def pct(xs: list[bool]) -> float | None:
        return 100.0 * sum(xs) / len(xs) if xs else None

    d = [abs(o["cut"] - t.teacher_cut) for t, o in pairs]
    row: dict[str, Any] = {
        "traces": n, "failed": len(outs) - n,
        "exact": pct([x == 0 for x in d]), "within1": pct([x <= 1 for x in d]),
        "mean_abs_diff": sum(d) / n if n else None,
        "think_removed": 100.0 * sum(o["removed"] for _, o in pairs) / n if n else None,
        "answer_kept": pct([o["answer_kept"] for _, o in pairs if o["answer_kept"] is not None]),
        "precision": None, "recall": None,
    }
    if n and all(o["pred_result"] is not None for _, o in pairs):
        tp = sum(len(set(o["pred_result"]) & t.teacher_result) for t, o in pairs)
        pred = sum(len(o["pred_result"]) for _, o in pairs)
        true = sum(len(t.teacher_result) for t, _ in pairs)
        row["precision"] = 100.0 * tp / pred if pred else None
        row["recall"] = 100.0 * tp / true if true else None
        row["predicted_result"], row["teacher_result"] = pred, true
    scored = [(p, i in t.teacher_result) for t, o in pairs if o.get("p_result") is not None
              for i, p in enumerate(o["p_result"])]
    row["auc"] = auroc(scored) if scored else None
    return row


def auroc(scored: Sequence[tuple[float, bool]]) -> float | None:
    """Area under the ROC curve of P(Result) for the teacher's Result paragraphs (ties count half).

    Threshold-free: it shows whether a model ranks Result paragraphs above the rest even when it
    never reaches the 0.5 the cut rule needs.
    """
    pos = sorted(p for p, y in scored if y)
    neg = sorted(p for p, y in scored if not y)
    if not pos or not neg:
        return None
    import bisect

    wins = sum(bisect.bisect_left(neg, p) + 0.5 * (bisect.bisect_right(neg, p) - bisect.bisect_left(neg, p))
               for p in pos)
    return 100.0 * wins / (len(pos) * len(neg))


def _score_model(scorer: Any, traces: Sequence[_Trace], mode: str, position: str, second_half: bool,
                 progress: bool, desc: str) -> list[dict[str, Any] | None]:
    outs: list[dict[str, Any] | None] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(traces), desc=desc, unit="trace")
    for tr in traces:
        t0 = time.perf_counter()
        res = scorer.score([tr.rec["problem"]], [tr.paragraphs], mode)[0]
        if res.error is not None or res.p_result is None:
            outs.append(None)
        else:
            o = _from_probs(tr, res.p_result, position, second_half)
            o["seconds"] = round(time.perf_counter() - t0, 2)
            outs.append(o)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return outs


def evaluate_reflector(cfg: EvalConfig, progress: bool = True, scorers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the report; writes `<out>.json` and `<out>.md` and returns the JSON object.

    `scorers` may map "model"/"base" to already loaded scorers (tests, notebooks).
    """
    from transformers import AutoTokenizer

    from rearl.backends import reflection_scorer
    from rearl.core.detectors import first_reflection_detect, ratio_detect
    from rearl.reflector.labels import read_labels
    from rearl.reflector.train import read_meta

    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    records = read_labels(cfg.labels)
    if not records:
        raise DataError(f"{cfg.labels}: no label records")
    traces = _prepare(records, cfg.position, cfg.second_half)
    meta = read_meta(cfg.model) if Path(cfg.model).is_dir() else {}
    window = model_window(cfg.model, cfg.window_tokens)
    scorers = dict(scorers or {})
    rows: list[tuple[str, list[dict[str, Any] | None]]] = []

    policy_tok = AutoTokenizer.from_pretrained(traces[0].rec["tokenizer"]) if traces else None
    for name, path in (("model", cfg.model), ("base", cfg.base_model)):
        if path is None:
            continue
        sc = scorers.get(name) or reflection_scorer(path, batch_size=cfg.batch_size, device=cfg.device,
                                                    **({"max_context": cfg.max_context} if cfg.max_context else {}))
        label = "trained model" if name == "model" else f"base model ({path}, untrained)"
        if window:
            rows.append((f"{label}, windows of {window} tokens",
                         _score_model(WindowedScorer(sc, window, policy_tok), traces, cfg.mode, cfg.position,
                                      cfg.second_half, progress, f"{name} (windowed)")))
        # the untrained base only in the model's main mode: it is a reference point, and CPU time is scarce
        if (cfg.whole_trace and name == "model") or not window:
            rows.append((f"{label}, whole trace",
                         _score_model(sc, traces, cfg.mode, cfg.position, cfg.second_half, progress, f"{name} (whole)")))

    teacher = sorted({str(t.rec.get("teacher")) for t in traces})
    rows.append((f"teacher labels ({', '.join(teacher)})", [_from_probs(t, _indicator(t.teacher_result, len(t.paragraphs)),
                                                                        cfg.position, cfg.second_half) for t in traces]))
    if teacher != ["oracle"] and traces and all(t.ok is not None for t in traces):
        from rearl.core.detectors import oracle_detect

        outs = []
        for t in traces:
            d = oracle_detect(t.seg, None, position=cfg.position, second_half=cfg.second_half, mentions_ok=t.ok)
            outs.append(_outcome(t, d.cut_paragraph, d.kept_char_end, set(d.result_paragraphs)))
        rows.append(("oracle (gold + verifier)", outs))
    rows.append(("no Result (all Think: cut at the cap)",
                 [_from_probs(t, [0.0] * len(t.paragraphs), cfg.position, cfg.second_half) for t in traces]))
    rows.append(("first reflection after the first answer", [
        _outcome(t, d.cut_paragraph, d.kept_char_end, None) for t in traces for d in [first_reflection_detect(t.seg)]]))
    ratios = list(cfg.ratios)
    model_outs = rows[0][1] if cfg.model and rows else []
    kept = [1 - o["removed"] for o in model_outs if o is not None]
    matched = round(sum(kept) / len(kept), 3) if kept else None
    for r in ratios + ([matched] if matched and matched not in ratios else []):
        name = f"fixed ratio {r:g}" + (" (the model's budget)" if r == matched and r not in cfg.ratios else "")
        rows.append((name, [_outcome(t, d.cut_paragraph, d.kept_char_end, None)
                            for t in traces for d in [ratio_detect(t.seg, ratio=r)]]))

    table = [{"method": name, **metrics(traces, outs)} for name, outs in rows]
    per_trace = [{"key": t.rec["key"], "n_paragraphs": len(t.paragraphs), "teacher_cut": t.teacher_cut,
                  "teacher_result": sorted(t.teacher_result), "think_tokens": t.seg.think_tokens,
                  "cuts": {name: (o or {}).get("cut") for name, o in ((n, outs[k]) for n, outs in rows)}}
                 for k, t in enumerate(traces)]
    report = {"config": asdict(cfg), "model_meta": {k: meta.get(k) for k in ("base", "teacher", "window_tokens", "steps",
                                                                              "train_loss", "examples", "seconds")},
              "window_tokens": window, "traces": len(traces), "teacher": teacher, "position": cfg.position,
              "table": table, "per_trace": per_trace,
              "details": {name: outs for name, outs in rows if name.startswith(("trained", "base"))}}
    out = cfg.out or str(Path(cfg.model) / f"eval_{Path(cfg.labels).stem}")
    write_json_atomic(out + ".json", report)
    write_text_atomic(out + ".md", markdown_table(report))
    report["paths"] = [out + ".md", out + ".json"]
    return report


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown_table(report: dict[str, Any]) -> str:
    head = ("| method | traces | Normal cut = teacher % | within ±1 % | mean abs diff (paragraphs) | "
            "Result precision % | Result recall % | Result AUROC % | thinking removed % | answer kept % |")
    lines = [f"Teacher: {', '.join(report['teacher'])}; {report['traces']} held-out traces; "
             f"position {report['position']}.", "", head, "|" + "---|" * 10]
    for r in report["table"]:
        lines.append(f"| {r['method']} | {r['traces']}" + (f" ({r['failed']} failed)" if r["failed"] else "") + " | "
                     + " | ".join(_fmt(r[k]) for k in ("exact", "within1", "mean_abs_diff", "precision", "recall",
                                                       "auc", "think_removed", "answer_kept")) + " |")
    lines += ["", "Answer kept: among traces whose thinking holds a correct answer at all. Precision/recall: "
              "paragraphs with P(Result) >= 0.5 against the teacher's Result paragraphs (precision '-' when none "
              "is predicted). AUROC: how P(Result) ranks the teacher's Result paragraphs above the others, "
              "threshold-free (50 = chance)."]
    return "\n".join(lines) + "\n"
