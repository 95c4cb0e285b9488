"""Evaluation harness (docs/evaluation.md): sample every benchmark problem n times, score at token budgets.

A run directory holds:

* ``config.json``: the sampling settings. A rerun into the same directory with different sampling
  settings is refused; benchmarks, ``--limit``, ``--n`` and budgets may change between reruns.
* ``samples.jsonl``: one record per sample, appended and fsynced as soon as it exists, keyed by
  ``benchmark:id:k``. A rerun generates only the missing keys; a line torn by a kill is dropped and
  redone. Records keep the sampled completion ids (stop token removed, recorded as ``stop_id``) and
  their decoding: budgets cut the ids, so the 8K score of a 16K run is exact, not re-tokenised.
* ``scores.jsonl``, ``summary.json``, ``summary.md``: recomputed from the samples on every run.

Seeds are fixed per sample (servers, vLLM) or per batch of samples (in-process transformers), so a
resumed run draws what an uninterrupted one would have drawn (for transformers: with the same
``--batch-size`` and the same data; batches are laid out per benchmark).

The metrics are defined in `rearl.eval.metrics`.
"""

from __future__ import annotations

import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from rearl.core.answers import EXTRACT_MODES
from rearl.core.io import (
    DataError,
    ResumableJsonl,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from rearl.core.prompts import opens_thinking
from rearl.core.reflection import REGEX_MODES
from rearl.eval.benchmarks import BENCHMARKS as BENCHMARK_NAMES
from rearl.eval.metrics import (
    load_summary,
    score_samples,
    summarize,
    summary_markdown,
)
from rearl.options import option

DEFAULT_BENCHMARKS = ("gsm8k", "math500", "gaokao2023en", "amc23", "aime24")
BACKENDS = ("auto", "hf", "lean", "vllm", "server")
# Settings that change what gets sampled: a resumed run must keep them.
_SAMPLING_KEYS = ("model", "lora", "temperature", "top_p", "top_k", "seed", "max_tokens", "prompt")


@dataclass
class EvalConfig:
    """Options of `rearl eval`."""

    model: str = option("default", "path, 'default' (embedded model) or an OpenAI-compatible server URL")
    out: str = option("runs/eval", "run directory (resumable: a rerun continues)", required=True)
    benchmarks: list[str] = option(
        default_factory=lambda: list(DEFAULT_BENCHMARKS), split=True,
        help=f"comma-separated: {', '.join(BENCHMARK_NAMES)}, or JSONL files of your own (problem/question, answer, "
             "optional level; named after the file)")
    n: int | str = option("auto", "samples per problem; auto = 8 for AIME/AMC, 1 otherwise (docs/evaluation.md)",
                          parse=lambda s: int(s) if s.isdigit() else s)
    max_tokens: int = option(16384, "generation budget")
    budgets: list[int] | None = option(None, "comma-separated scoring budgets <= --max-tokens (default: half and full)",
                                       split=True, parse=int)
    data_dir: str | None = option(None, "benchmark files (default: $REARL_SHARED/data/eval or ../shared/data/eval)")
    limit: int | None = option(None, "only the first N problems of each benchmark")
    temperature: float = option(0.6, "sampling temperature")
    top_p: float = option(0.95, "nucleus sampling")
    top_k: int = option(0, "top-k sampling; 0 = off")
    seed: int = option(2, "sampling seed (each sample derives its own)")
    backend: str = option("auto", "auto: server for a URL, else in-process transformers (hf); lean: rearl's batched "
                          "decoder for small Llama/Qwen2 models on CPU (same distribution, 1.7-2x faster); vllm: offline "
                          "engine (GPU)", choices=BACKENDS)
    tokenizer: str | None = option(None, "tokenizer path for a served model (default: its name)")
    lora: str | None = option(None, "vLLM: a LoRA adapter directory applied to --model")
    batch_size: int = option(8, "transformers: samples per generate call; vLLM: at least 512 per engine call")
    device: str = option("cpu", "cpu | cuda")
    dtype: str | None = option(None, "model dtype (default: float32 on CPU, bfloat16 on GPU)")
    concurrency: int = option(16, "server: requests in flight")
    threads: int | None = option(None, "torch CPU threads (default: torch's; 1 is often faster on a busy CPU)")
    reference: str | None = option(None, "a run directory whose mean tokens count as 100% (token ratio)")
    regex: str = option("authors", "reflection keyword matcher (docs/method.md#reflection-reward)", choices=REGEX_MODES)
    extraction: str = option("answer_part", "answer extraction (docs/method.md#accuracy-reward)",
                             choices=EXTRACT_MODES)


@dataclass
class Job:
    key: str
    benchmark: str
    id: str
    k: int
    problem: str
    gold: str
    level: Any = None
    seed: int = 0

    @property
    def problem_key(self) -> str:
        return f"{self.benchmark}:{self.id}"


def sample_key(benchmark: str, pid: str, k: int) -> str:
    return f"{benchmark}:{pid}:{k}"


def derived_seed(base: int, key: str) -> int:
    """A seed that depends only on the run seed and the key (stable across runs and machines)."""
    return zlib.crc32(f"{base}:{key}".encode("utf-8")) & 0x7FFFFFFF


def samples_per_problem(benchmark: str, n: int | str) -> int:
    from rearl.eval.benchmarks import BENCHMARKS

    if n == "auto":
        return BENCHMARKS[benchmark].samples if benchmark in BENCHMARKS else 1
    try:
        k = int(n)
    except (TypeError, ValueError):
        k = 0
    if k < 1:
        raise ValueError(f"--n must be 'auto' or a positive integer, got {n!r}")
    return k


def resolve_budgets(cfg: EvalConfig) -> list[int]:
    if cfg.max_tokens < 1:
        raise ValueError(f"--max-tokens must be positive, got {cfg.max_tokens}")
    budgets = sorted({int(b) for b in (cfg.budgets or [max(1, cfg.max_tokens // 2)])} | {cfg.max_tokens})
    bad = [b for b in budgets if not 0 < b <= cfg.max_tokens]
    if bad:
        raise ValueError(f"budgets {bad} are outside 1..--max-tokens ({cfg.max_tokens}): a budget cuts samples, "
                         "it cannot lengthen them")
    return budgets


def plan(cfg: EvalConfig) -> list[Job]:
    """Every sample the run needs, benchmark by benchmark, problem by problem."""
    from rearl.eval.benchmarks import (
        BENCHMARKS,
        benchmark_label,
        is_file_benchmark,
        load_benchmark,
    )

    unknown = [b for b in cfg.benchmarks if b not in BENCHMARKS and not is_file_benchmark(b)]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)} "
                         "or give JSONL paths")
    labels = [benchmark_label(b) for b in dict.fromkeys(cfg.benchmarks)]
    clash = sorted({x for x in labels if labels.count(x) > 1})
    if clash:
        raise ValueError(f"two benchmarks would both be called {', '.join(clash)}: rename one of the files")
    jobs = []
    for name in dict.fromkeys(cfg.benchmarks):
        n = samples_per_problem(name, cfg.n)
        label = benchmark_label(name)
        for rec in load_benchmark(name, cfg.data_dir, cfg.limit):
            for k in range(n):
                key = sample_key(label, rec["id"], k)
                jobs.append(Job(key, label, rec["id"], k, rec["problem"], rec["answer"], rec.get("level"),
                                derived_seed(cfg.seed, key)))
    return jobs


# -- sampling -----------------------------------------------------------------------------------------
def _backend_name(cfg: EvalConfig) -> str:
    from rearl.backends import is_url

    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; choose one of {BACKENDS}")
    if cfg.backend == "auto":
        return "server" if is_url(cfg.model) else "hf"
    if (cfg.backend == "server") != is_url(cfg.model):
        raise ValueError("--backend server needs --model to be a URL (and only it does)")
    return cfg.backend


def make_policy(cfg: EvalConfig) -> Any:
    from rearl.backends.hf import HFPolicy
    from rearl.backends.server import OpenAIPolicy
    from rearl.backends.vllm import VLLMPolicy

    kind = _backend_name(cfg)
    if kind == "server":
        return OpenAIPolicy(cfg.model, tokenizer=cfg.tokenizer, concurrency=1)
    if kind == "vllm":
        return VLLMPolicy(cfg.model, tokenizer=cfg.tokenizer, lora=cfg.lora, dtype=cfg.dtype or "auto")
    if cfg.lora:
        raise ValueError("--lora is for the vLLM backend; for transformers pass a merged model or the adapter dir")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    if kind == "lean":
        from rearl.backends.lean import LeanPolicy

        return LeanPolicy(cfg.model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)
    return HFPolicy(cfg.model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)


def _policy_kind(policy: Any) -> str:
    """How to drive a policy: per-request seeds (server, vLLM) or one seed per batch (transformers)."""
    import inspect

    from rearl.backends.server import OpenAIPolicy

    if isinstance(policy, OpenAIPolicy):
        return "server"
    return "seeded" if "seeds" in inspect.signature(policy.generate).parameters else "batched"


def _context_limit(policy: Any) -> int | None:
    cfg = getattr(getattr(policy, "model", None), "config", None)
    return getattr(cfg, "max_position_embeddings", None)


def _chunks(jobs: list[Job], size: int) -> list[list[Job]]:
    """Fixed batches per benchmark, so a resumed run redraws the same batches with the same seeds."""
    out: list[list[Job]] = []
    for name in dict.fromkeys(j.benchmark for j in jobs):
        js = [j for j in jobs if j.benchmark == name]
        out += [js[i : i + size] for i in range(0, len(js), size)]
    return out


def _record(job: Job, gen: Any, tok: Any, prompt_len: int, max_new: int, exact: bool, seed: int) -> dict[str, Any]:
    ids = [int(t) for t in gen.ids]
    stop = ids.pop() if gen.finished and ids else None  # every backend ends a finished sample with its stop id
    return {
        "key": job.key, "benchmark": job.benchmark, "id": job.id, "k": job.k, "level": job.level, "gold": job.gold,
        "seed": seed, "prompt_tokens": prompt_len, "max_new_tokens": max_new, "n_tokens": len(ids),
        "finished": bool(gen.finished), "stop_id": stop, "ids_exact": exact,
        "text": tok.decode(ids, skip_special_tokens=False), "ids": ids,
    }


def generate_samples(cfg: EvalConfig, jobs: list[Job], out: ResumableJsonl, policy: Any,
                     on_done: Callable[[Job], None] = lambda j: None) -> int:
    """Sample every job whose key is not in `out` yet; each record is appended as soon as it exists."""
    from rearl.core.prompts import policy_prompt_ids

    tok = policy.tokenizer
    prompts: dict[str, list[int]] = {}

    def prompt(j: Job) -> list[int]:
        if j.problem_key not in prompts:
            prompts[j.problem_key] = policy_prompt_ids(tok, j.problem)
        return prompts[j.problem_key]

    kind = _policy_kind(policy)
    top_k = cfg.top_k if cfg.top_k > 0 else (0 if kind == "batched" else -1)  # transformers: 0 = off; servers: -1
    sample = dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=top_k)
    written = 0
    if kind == "server":
        todo = [j for j in jobs if j.key not in out]

        def one(j: Job):
            return policy.generate([prompt(j)], max_new_tokens=cfg.max_tokens, seed=j.seed, **sample)[0]

        for j in todo:  # build prompts on this thread (tokenizers are not thread-safe to share)
            prompt(j)
        with ThreadPoolExecutor(max_workers=max(1, cfg.concurrency)) as ex:
            futs = {ex.submit(one, j): j for j in todo}
            try:
                for f in as_completed(futs):
                    j = futs[f]
                    g = f.result()
                    out.write(_record(j, g, tok, len(prompt(j)), cfg.max_tokens, exact=bool(getattr(g, "exact", False)),
                                      seed=j.seed))
                    written += 1
                    on_done(j)
            except BaseException:
                for f in futs:  # a failed request stops the run (a rerun resumes): do not sample on
                    f.cancel()
                raise
        return written
    size = cfg.batch_size if kind == "batched" else max(cfg.batch_size, 512)
    ctx = _context_limit(policy)
    for chunk in _chunks(jobs, max(1, size)):
        missing = [j for j in chunk if j.key not in out]
        if not missing:
            continue
        # With one seed per batch, the whole batch is redrawn, so a batch cut by a kill comes back
        # identical; with per-sample seeds the missing samples suffice.
        batch = missing if kind == "seeded" else chunk
        ps = [prompt(j) for j in batch]
        max_new = cfg.max_tokens
        if ctx:
            max_new = max(1, min(max_new, ctx - max(len(p) for p in ps)))
        if kind == "seeded":
            gens = policy.generate(ps, max_new_tokens=max_new, seeds=[j.seed for j in batch], **sample)
        else:
            gens = policy.generate(ps, max_new_tokens=max_new, seed=chunk[0].seed, **sample)
        for j, p, g in zip(batch, ps, gens):
            if j.key in out:
                continue
            out.write(_record(j, g, tok, len(p), max_new, exact=True,
                              seed=j.seed if kind == "seeded" else chunk[0].seed))  # the seed actually passed
            written += 1
            on_done(j)
    return written


# -- running ------------------------------------------------------------------------------------------
def _run_config(cfg: EvalConfig, tokenizer: Any, tokenizer_path: str) -> dict[str, Any]:
    from rearl import __version__
    from rearl.core.prompts import MATH_PROMPT

    return {
        "model": cfg.model, "lora": cfg.lora, "backend": _backend_name(cfg), "tokenizer": tokenizer_path,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k, "seed": cfg.seed,
        "max_tokens": cfg.max_tokens, "prompt": MATH_PROMPT, "think_in_prompt": opens_thinking(tokenizer),
        "batch_size": cfg.batch_size, "rearl_version": __version__,
        # scoring settings (free to change between reruns), so `score_run` can redo the last scoring
        "budgets": resolve_budgets(cfg), "regex": cfg.regex, "extraction": cfg.extraction,
    }


def _check_resume(old: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    diff = [k for k in _SAMPLING_KEYS if old.get(k) != new.get(k)]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff)
        raise DataError(f"{path}: this run was sampled with other settings ({detail}); use another --out")


def _tokenizer_path(cfg: EvalConfig, old: dict[str, Any] | None) -> str | None:
    from rearl.backends.embedded import resolve_model

    if cfg.tokenizer:
        return cfg.tokenizer
    if old and old.get("tokenizer"):
        return old["tokenizer"]
    return None if _backend_name(cfg) == "server" else str(resolve_model(cfg.model))


def evaluate(cfg: EvalConfig, progress: bool = True, policy: Any = None, pool: Any = None) -> dict[str, Any]:
    """Sample what is missing in `cfg.out`, then score every planned sample and write the summary.

    `policy` may be passed (anything with the backends' `generate` and a `tokenizer`); otherwise it
    is built from `cfg` only when something is left to sample.
    """
    from transformers import AutoTokenizer

    budgets = resolve_budgets(cfg)
    jobs = plan(cfg)
    reference = load_summary(cfg.reference) if cfg.reference else None  # fail before sampling, not after
    if not jobs:
        raise DataError("nothing to evaluate: the benchmarks are empty (check --data-dir and --limit)")
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "config.json"
    old = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else None
    t0 = time.perf_counter()
    generated = 0
    with ResumableJsonl(out_dir / "samples.jsonl", key="key") as samples:
        todo = [j for j in jobs if j.key not in samples]
        tok_path = _tokenizer_path(cfg, old) if policy is None else None
        if policy is None and (todo or tok_path is None):
            policy = make_policy(cfg)
        if policy is not None:
            tok = policy.tokenizer
            tok_path = cfg.tokenizer or getattr(tok, "name_or_path", None)
        else:
            tok = AutoTokenizer.from_pretrained(tok_path)
        run = _run_config(cfg, tok, str(tok_path))
        if old is not None:
            _check_resume(old, run, cfg_path)
        write_json_atomic(cfg_path, run)
        if todo:
            bar = None
            if progress:
                from tqdm.auto import tqdm

                # mininterval=0: samples of a batch arrive together; show each, not the first of them
                bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="eval", unit="sample", mininterval=0)

            def tick(j: Job) -> None:
                if bar is not None:
                    bar.set_postfix_str(j.benchmark, refresh=False)
                    bar.update(1)

            try:
                generated = generate_samples(cfg, jobs, samples, policy, on_done=tick)
            finally:
                if bar is not None:
                    bar.close()
        records = [samples.done[j.key] for j in jobs]
    gen_s = time.perf_counter() - t0
    scores = score_samples(records, tok, budgets, think_in_prompt=run["think_in_prompt"], regex=cfg.regex,
                           extraction=cfg.extraction, pool=pool, progress=progress)
    summary = summarize(scores, budgets, reference, order=list(dict.fromkeys(j.benchmark for j in jobs)))
    summary["run"] = {**run, "out": str(out_dir), "benchmarks": list(dict.fromkeys(cfg.benchmarks)),
                      "limit": cfg.limit, "n": cfg.n, "regex": cfg.regex, "extraction": cfg.extraction}
    summary["reference"] = cfg.reference
    summary["timing"] = {"generated_samples": generated, "generation_seconds": round(gen_s, 2),
                         "scoring_seconds": round(time.perf_counter() - t0 - gen_s, 2)}
    write_jsonl_atomic(out_dir / "scores.jsonl", scores)
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "summary.md", summary_markdown(summary))
    return summary


def score_run(run_dir: str | Path, budgets: Sequence[int] | None = None, reference: str | None = None,
              pool: Any = None, progress: bool = False) -> dict[str, Any]:
    """Rescore a run directory from its samples alone (no model needed); rewrites its summary."""
    from transformers import AutoTokenizer

    d = Path(run_dir)
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{cfg_path}: no such file (is {d} a `rearl eval` run?)")
    run = json.loads(cfg_path.read_text(encoding="utf-8"))
    records = []
    for lineno, rec in read_jsonl(d / "samples.jsonl"):
        missing = {"key", "benchmark", "id", "gold", "ids", "finished"} - set(rec)
        if missing:
            raise DataError(f"{d / 'samples.jsonl'}:{lineno}: missing field(s) {', '.join(sorted(missing))}")
        records.append(rec)
    records = list({r["key"]: r for r in records}.values())
    settings = {k: run.get(k, v) for k, v in (("regex", "authors"), ("extraction", "answer_part"))}
    budgets = sorted(budgets or run.get("budgets") or resolve_budgets(EvalConfig(max_tokens=run["max_tokens"])))
    tok = AutoTokenizer.from_pretrained(run["tokenizer"])
    scores = score_samples(records, tok, budgets, think_in_prompt=run.get("think_in_prompt", False), pool=pool,
                           progress=progress, **settings)
    summary = summarize(scores, budgets, load_summary(reference) if reference else None)
    summary["run"] = {**run, "out": str(d)}
    summary["reference"] = reference
    write_jsonl_atomic(d / "scores.jsonl", scores)
    write_json_atomic(d / "summary.json", summary)
    write_text_atomic(d / "summary.md", summary_markdown(summary))
    return summary


