"""Sequential revision (spec §2.6, §7.4.7): keep the thinking up to the cut, close it with a
scaffold, and let the policy write the final answer.

The kept prefix is the original completion's own token ids (no decode/re-encode), so a revised
sequence shares its prefix exactly with the sample it came from. The scaffold is inserted by the
system, not sampled: `sampled_mask` tells the two apart so training can mask it. A revision that
does not reach EOS within the budget is marked incomplete (the authors append EOS regardless).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

DEFAULT_SCAFFOLD = "\n</think>\n\n**Final Answer:**\n\n"


class Policy(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, temperature: float = 0.6,
                 top_p: float = 1.0, top_k: int = 50, seed: int | None = None) -> list[Any]: ...


@dataclass
class Revision:
    ids: list[int]  # the revised completion: kept prefix + scaffold + generated answer
    text: str
    sampled_mask: list[int]  # 1 = sampled by the policy (kept prefix, answer), 0 = inserted scaffold
    n_kept: int
    n_scaffold: int
    n_generated: int
    completed: bool  # the answer ended with EOS within the budget


def scaffold_ids(tokenizer: Any, prefix_text: str, scaffold: str = DEFAULT_SCAFFOLD) -> list[int]:
    """Scaffold ids. The authors strip the kept text before the scaffold; a token-exact prefix can
    end in whitespace (".\\n\\n" is one token in Qwen), so the scaffold's own leading newlines are
    dropped instead when the prefix already ends with a newline."""
    s = scaffold.lstrip("\n") if prefix_text.endswith("\n") else scaffold
    return list(tokenizer(s, add_special_tokens=False)["input_ids"])


def revise(
    policy: Policy,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    prefix_ids: Sequence[Sequence[int]],
    *,
    scaffold: str = DEFAULT_SCAFFOLD,
    max_new_tokens: int = 256,
    temperature: float = 0.6,
    top_p: float = 1.0,
    top_k: int = 50,
    seed: int | None = None,
) -> list[Revision]:
    """Complete every kept prefix (`prefix_ids[i]`, completion ids) after `prompt_ids[i]`."""
    if len(prompt_ids) != len(prefix_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(prefix_ids)} prefixes")
    scaf = []
    inputs = []
    for p, k in zip(prompt_ids, prefix_ids):
        s = scaffold_ids(tokenizer, tokenizer.decode(list(k[-4:]), skip_special_tokens=False) if k else "", scaffold)
        scaf.append(s)
        inputs.append(list(p) + list(k) + s)
    gens = policy.generate(inputs, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    out = []
    for k, s, g in zip(prefix_ids, scaf, gens):
        ids = list(k) + s + list(g.ids)
        mask = [1] * len(k) + [0] * len(s) + [1] * len(g.ids)
        out.append(Revision(ids, tokenizer.decode(ids, skip_special_tokens=True), mask, len(k), len(s), len(g.ids), g.finished))
    return out


# -- offline revision of detected cuts (`rearl revise`) ---------------------------------------------
@dataclass
class ReviseConfig:
    cuts: str
    policy: str  # path, "default" (embedded model) or server URL
    out: str
    input: str | None = None  # traces; default: the one recorded in the cuts summary
    policy_tokenizer: str | None = None  # for a server policy
    positions: Sequence[str] | None = None  # default: every cut in the records
    scaffold: str = DEFAULT_SCAFFOLD
    max_new_tokens: int = 256
    temperature: float = 0.6
    top_p: float = 1.0
    top_k: int = 50
    seed: int | None = 0
    batch_size: int = 8
    device: str = "cpu"
    incomplete_is_wrong: bool = True
    limit: int | None = None


def revise_file(cfg: ReviseConfig, progress: bool = True, policy: Any = None) -> dict[str, Any]:
    """Complete every cut of a `rearl detect` output with a policy and score it (resumable).

    Cuts are located by character offset in the original response, so the policy's own tokenizer
    encodes the response and the kept prefix is a prefix of that encoding.
    """
    import json
    from pathlib import Path

    from .backends import policy_backend
    from .detect import summary_path
    from .io import DataError, ResumableJsonl, read_jsonl, write_json_atomic
    from .prompts import policy_prompt_ids
    from .text import ThinkTags, segment
    from .traces import load_traces
    from .verify import check_completions, default_pool

    sp = Path(summary_path(cfg.cuts))
    summary = json.loads(sp.read_text()) if sp.exists() else {}
    inp = cfg.input or summary.get("input")
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
    with ResumableJsonl(cfg.out, key="key") as out:
        todo = [j for j in jobs if j[0] not in out]
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
    """The paper's offline revision table (spec §3.3): original vs each cut policy."""
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
