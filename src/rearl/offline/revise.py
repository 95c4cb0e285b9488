"""`rearl revise`: complete the cuts that `rearl detect` found with a policy, score every revision,
and compare the cut policies in one table (accuracy, tokens, answers finished)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rearl.core.revision import DEFAULT_SCAFFOLD, revise
from rearl.options import option


# -- offline revision of detected cuts (`rearl revise`) ---------------------------------------------
@dataclass
class ReviseConfig:
    """Options of `rearl revise` (and `revise_file`)."""

    cuts: str = option(help="output of `rearl detect`")
    policy: str = option(help="policy: path, 'default' (embedded) or server URL")
    out: str = option(help="output JSONL, one record per (trace, cut) (resumable)")
    input: str | None = option(None, "the traces (default: as recorded next to the cuts)")
    policy_tokenizer: str | None = option(None, "tokenizer path of a served policy (default: its name)")
    positions: list[str] | None = option(None, "comma-separated cut names to revise (default: all in the records)",
                                         split=True)
    scaffold: str = option(DEFAULT_SCAFFOLD, "text that closes the kept thinking before the answer", cli=False)
    max_new_tokens: int = option(256, "answer budget")
    temperature: float = option(0.6, "sampling temperature")
    top_p: float = option(1.0, "nucleus sampling")
    top_k: int = option(50, "top-k sampling")
    seed: int | None = option(0, "sampling seed")
    batch_size: int = option(8, "revisions per generate call")
    device: str = option("cpu", "cpu | cuda")
    incomplete_is_wrong: bool = option(True, "count a revision that does not reach EOS (cut by --max-new-tokens) as "
                                             "correct when its answer is right (default: it is wrong)",
                                       flag="--incomplete-counts")
    limit: int | None = option(None, "only the first N traces")
    force: bool = option(False, "start --out fresh when it holds a run of other cuts, traces or settings (default: refuse)")


def revise_file(cfg: ReviseConfig, progress: bool = True, policy: Any = None) -> dict[str, Any]:
    """Complete every cut of a `rearl detect` output with a policy and score it (resumable).

    Cuts are located by character offset in the original response, so the policy's own tokenizer
    encodes the response and the kept prefix is a prefix of that encoding.
    """
    import json
    from pathlib import Path

    from rearl.backends import policy_backend
    from rearl.core.io import DataError, ResumableJsonl, read_jsonl, write_json_atomic
    from rearl.core.prompts import policy_prompt_ids
    from rearl.core.text import ThinkTags, segment
    from rearl.core.traces import load_traces
    from rearl.core.verify import check_completions, default_pool
    from rearl.offline.detect import summary_path

    from rearl.core.io import refuse_same_path

    sp = Path(summary_path(cfg.cuts))
    summary = json.loads(sp.read_text()) if sp.exists() else {}
    inp = cfg.input or summary.get("input")
    refuse_same_path(cfg.out, [cfg.cuts, inp])
    if not inp:
        raise DataError(f"{cfg.cuts}: no summary next to it names the traces; pass --input")
    fields = summary.get("fields") or {}
    traces = {t.id: t for t in load_traces(inp, fields.get("problem"), fields.get("answer"), fields.get("response"))}
    cut_recs = []
    for lineno, rec in read_jsonl(cfg.cuts):
        if "error" in rec:
            continue
        if "cuts" not in rec or "id" not in rec:
            raise DataError(f"{cfg.cuts}:{lineno}: not a `rearl detect` record (no 'cuts')")
        if str(rec["id"]) not in traces:
            raise DataError(f"{cfg.cuts}:{lineno}: trace {rec['id']!r} is not in {inp}")
        cut_recs.append(rec)
    if cfg.limit is not None:
        cut_recs = cut_recs[: cfg.limit]
    if policy is None:
        policy = policy_backend(cfg.policy, tokenizer=cfg.policy_tokenizer, batch_size=cfg.batch_size, device=cfg.device)
    tok = policy.tokenizer
    tags = ThinkTags.from_tokenizer(tok)
    pool = default_pool()

    jobs = []  # (key, trace, position name, char_end)
    for rec in cut_recs:
        t = traces[str(rec["id"])]
        for name, c in rec["cuts"].items():
            if cfg.positions and name not in cfg.positions:
                continue
            jobs.append((f"{t.id}:{name}", t, name, int(c["char_end"])))
    from rearl.core.io import file_fingerprint, resume_or_refuse

    resume_or_refuse(cfg.out, {"cuts": file_fingerprint(cfg.cuts), "input": file_fingerprint(inp),
                               **{k: getattr(cfg, k) for k in ("policy", "policy_tokenizer", "scaffold", "max_new_tokens",
                                                               "temperature", "top_p", "top_k", "seed",
                                                               "incomplete_is_wrong")}},
                     cfg.force, extra=[summary_path(cfg.out)])
    with ResumableJsonl(cfg.out, key="key") as out:
        todo = [j for j in jobs if out.pending(j[0])]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="revise", unit="cut")
        for k in range(0, len(todo), cfg.batch_size):
            chunk = todo[k : k + cfg.batch_size]
            prompts, prefixes, originals = [], [], []
            for _, t, _, char_end in chunk:
                seg = segment(tok, text=t.response, tags=tags)
                prompts.append(policy_prompt_ids(tok, t.problem))
                prefixes.append(seg.tokens.ids[: seg.tokens.tokens_ending_by(char_end)])
                originals.append(seg)
            revs = revise(policy, tok, prompts, prefixes, scaffold=cfg.scaffold, max_new_tokens=cfg.max_new_tokens,
                          temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                          seed=None if cfg.seed is None else cfg.seed + k)
            golds = [t.answer for _, t, _, _ in chunk]
            have_gold = [g is not None for g in golds]
            ok = check_completions([r.text for r in revs], [g or "" for g in golds], pool=pool)
            orig_ok = check_completions([s.text for s in originals], [g or "" for g in golds], pool=pool)
            for (key, t, name, _), r, seg, good, ogood, hg in zip(chunk, revs, originals, ok, orig_ok, have_gold):
                correct = good.ok and (r.completed or not cfg.incomplete_is_wrong)
                out.write({
                    "key": key, "id": t.id, "position": name,
                    "kept_tokens": r.n_kept, "scaffold_tokens": r.n_scaffold, "generated_tokens": r.n_generated,
                    "revised_tokens": len(r.ids), "original_tokens": len(seg.tokens), "completed": r.completed,
                    "correct": correct if hg else None, "original_correct": ogood.ok if hg else None,
                    "completion": _completion_text(tok, r.ids),
                })
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        recs = [r for r in out.records() if r["key"] in {j[0] for j in jobs}]
    table = revision_table(recs)
    result = {"cuts": cfg.cuts, "input": inp, "policy": cfg.policy, "max_new_tokens": cfg.max_new_tokens, "table": table}
    write_json_atomic(summary_path(cfg.out), result)
    return result


def _completion_text(tok: Any, ids: Sequence[int]) -> str:
    """The revised completion as text, special tokens kept (think tags), without a final EOS."""
    ids = list(ids)
    if ids and ids[-1] == tok.eos_token_id:
        ids = ids[:-1]
    return tok.decode(ids, skip_special_tokens=False)


def revision_table(recs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's offline revision table (docs/reflection-model.md): original vs each cut policy."""
    by_id: dict[str, dict[str, Any]] = {}
    for r in recs:
        by_id.setdefault(r["id"], r)
    orig = list(by_id.values())

    def acc(rs: Sequence[dict[str, Any]], field: str) -> float | None:
        xs = [r[field] for r in rs if r.get(field) is not None]
        return 100.0 * sum(xs) / len(xs) if xs else None

    total_orig = sum(r["original_tokens"] for r in orig) or 1
    rows = [{"policy": "original", "n": len(orig), "accuracy": acc(orig, "original_correct"),
             "mean_tokens": sum(r["original_tokens"] for r in orig) / max(1, len(orig)), "token_ratio": 100.0,
             "completed": None}]
    names = sorted({r["position"] for r in recs}, key=lambda n: ("strong", "normal", "weak").index(n)
                   if n in ("strong", "normal", "weak") else 3)
    for n in names:
        rs = [r for r in recs if r["position"] == n]
        base = sum(by_id[r["id"]]["original_tokens"] for r in rs) or total_orig
        rows.append({
            "policy": n, "n": len(rs), "accuracy": acc(rs, "correct"),
            "mean_tokens": sum(r["revised_tokens"] for r in rs) / max(1, len(rs)),
            "token_ratio": 100.0 * sum(r["revised_tokens"] for r in rs) / base,
            "completed": 100.0 * sum(bool(r["completed"]) for r in rs) / max(1, len(rs)),
        })
    return rows
