"""The toy overthinking reasoning model: tokenizer, a tiny Llama, SFT on the traces, and its cache.

`build_toy_lrm()` returns a directory that AutoTokenizer and AutoModelForCausalLM load, so every
rearl backend works on it unchanged. A finished build is reused; a build is written to a temporary
sibling directory and renamed into place with a `.complete` marker, so a killed build leaves
nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from rearl.testbed.tasks import LEVELS, iter_tasks, level_table
from rearl.testbed.traces import EOS, finish_document, make_trace, make_traces

WORLD_VERSION = 10  # bump when tasks/traces change, so cached models are not reused across worlds
COMPLETE = ".complete"
META = "testbed.json"

UNK, PAD = "<unk>", "<pad>"
SPECIALS = (UNK, PAD, EOS)
# Not special: R1's think tags survive `skip_special_tokens=True`, and rearl finds them in the text.
PLAIN_ADDED = ("\n", "<think>", "</think>")
CONT = "##"  # prefix of a piece glued to the previous one (a digit inside a number, a closing brace)
GLUED = tuple("0123456789}")

# Renders only the question, whatever wraps it: rearl's prompts put the problem after "Question: ".
# The generation prompt opens the thinking, as R1-style templates do; an assistant turn, if given,
# is the completion that follows it.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(q='', a=none) -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{%- set ns.q = m['content'] -%}{%- set ns.a = none -%}"
    "{%- elif m['role'] == 'assistant' -%}{%- set ns.a = m['content'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- set q = ns.q.split('Question: ')[-1].strip() -%}"
    "{%- if q.endswith('= ?') -%}{%- set q = q[:-3].strip() -%}{%- endif -%}"
    "{{- eos_token + 'Q : ' + q + ' = ?\\n<think>\\n' -}}"
    "{%- if ns.a is not none -%}{{- ns.a + eos_token -}}{%- endif -%}"
)


# -- tokenizer --------------------------------------------------------------------------------------
def train_tokenizer(texts: Sequence[str]):
    """A word-level tokenizer learned from the corpus, with one token per digit, that decodes exactly.

    The vocabulary (words, punctuation, place letters, digits) is learned with tokenizers'
    WordLevelTrainer over the corpus split at whitespace and around every digit. It is then served
    by a WordPiece model: a digit glued to what precedes it ("22106", "b7", "\\boxed{5") becomes a
    continuation piece (##2), and the WordPiece decoder glues those back while it puts one space
    between the other tokens. Newlines are added tokens; the decoder drops the spaces around them.
    So decode(encode(text)) == text for the traces' text conventions, and a decoded answer is
    "\\boxed{22106}", which rearl's verifier reads as is.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    learner = Tokenizer(models.WordLevel(unk_token=UNK))
    learner.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"\d|\}"), "isolated")]
    )
    # kept out of the learnt words
    learner.add_special_tokens([AddedToken(t, normalized=False) for t in SPECIALS])
    learner.add_tokens([AddedToken(t, normalized=False) for t in PLAIN_ADDED])
    learner.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIALS), min_frequency=1))
    learned = sorted(learner.get_vocab().items(), key=lambda kv: kv[1])
    vocab: dict[str, int] = {}
    for tok, _ in learned:
        if tok not in PLAIN_ADDED and tok not in vocab:
            vocab[tok] = len(vocab)
    for g in GLUED:
        vocab.setdefault(CONT + g, len(vocab))

    tk = Tokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=CONT, max_input_chars_per_word=64))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.Sequence([
        decoders.WordPiece(prefix=CONT, cleanup=False),
        decoders.Fuse(),
        decoders.Replace(" \n", "\n"),
        decoders.Replace("\n ", "\n"),
        # The prompt opens with EOS (it doubles as BOS) glued to "Q"; a stop EOS follows "}".
        decoders.Replace(EOS + " ", EOS),
        decoders.Replace(" " + EOS, EOS),
    ])
    tk.add_special_tokens([AddedToken(t, normalized=False) for t in SPECIALS])
    tk.add_tokens([AddedToken(t, normalized=False) for t in PLAIN_ADDED])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        clean_up_tokenization_spaces=False, padding_side="left", model_max_length=1024,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


# -- configuration ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSize:
    hidden: int = 256
    intermediate: int = 688
    layers: int = 4
    heads: int = 4
    max_positions: int = 1024


@dataclass(frozen=True)
class ToyConfig:
    """Everything that determines a build (its hash names the cache entry)."""

    seed: int = 0
    # How much SFT: a token count, so a seeded build is the same model on any machine however busy
    # (the LR schedule follows the steps, never the clock). `budget_minutes` is an optional safety cap:
    # hitting it cuts the build short, which the build's metadata, the console and the testbed report
    # say loudly (`cut_by_time_cap`); the story's probe then decides whether the model is usable.
    # 6M: world v3's build on 4M tokens read the thousands digit wrong in 15% of its look-ups (T=0 accuracy
    # L2 12%, L4 0%; the probe stopped the story); world v2's 4M build had passed (greedy L1-L4 100/50/60/50)
    sft_tokens: int = 6_000_000
    budget_minutes: float | None = None
    size: ModelSize = ModelSize(hidden=128, intermediate=344, layers=4, heads=4)
    levels: tuple[int, ...] = tuple(LEVELS)
    # harder levels get a little more of the data
    level_weights: tuple[float, ...] = (0.2, 0.25, 0.25, 0.3)
    tokenizer_corpus: int = 4000  # traces the vocabulary is learnt from
    finish_frac: float = 0.1  # documents that teach finishing from a cut (`traces.finish_document`)
    block: int = 512
    batch: int = 8
    lr: float = 2e-3
    warmup_steps: int = 50
    final_lr_frac: float = 0.05
    decay_frac: float = 1.0  # the LR decays over this last part of the budget (1: right after warmup)
    weight_decay: float = 0.01
    # bfloat16 autocast: None = where the CPU computes it natively (AVX512-BF16 or AMX), float32 elsewhere.
    # Measured: on a Xeon with AMX bf16 SFT ran 1.8x faster than fp32; on an AVX2-only EPYC it ran 7x
    # *slower* (956 vs 6,762 tokens/s for the quick model). Resolved before hashing (`resolved`), so the
    # cache key says which precision a build used.
    bf16: bool | None = None
    quick: bool = False
    world_version: int = WORLD_VERSION

    def resolved(self) -> "ToyConfig":
        return self if self.bf16 is not None else replace(self, bf16=native_bf16())

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def dirname(self) -> str:
        return f"toy-lrm-{'quick' if self.quick else 'full'}-s{self.seed}-{self.key()}"


QUICK_SIZE = ModelSize(hidden=128, intermediate=320, layers=2, heads=4, max_positions=1024)


def quick_config(seed: int = 0, budget_minutes: float = 20.0) -> ToyConfig:
    """A small model and a short SFT (a few minutes on one thread): it learns the trace format, not the
    arithmetic. The cap is only a safety net (hitting it is reported). Tokens, measured on world v2 (8
    held-out tasks, greedy, one thread of an AVX2 EPYC): 1.2M tokens (123 s, loss 0.37) left 3 of 6
    finished traces without `</think>` before the box; 2M (~4 min, loss 0.29) wrote it in all 6."""
    return ToyConfig(seed=seed, sft_tokens=2_000_000, budget_minutes=budget_minutes, size=QUICK_SIZE,
                     tokenizer_corpus=1000, block=256, batch=8, lr=3e-3, warmup_steps=20, quick=True)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)


def pick_threads() -> int:
    """Torch threads for CPU work here: `$REARL_TESTBED_THREADS`, else 1 on a busy machine.

    With two cores shared with other jobs, two OpenMP threads spin-wait on each other and run 3-25x
    slower than one (measured: 1.6k vs 7.7k tok/s SFT for the 3.2M model); on an idle machine all
    cores win (about 10k tok/s).
    """
    env = os.environ.get("REARL_TESTBED_THREADS")
    if env:
        return max(1, int(env))
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


class torch_threads:
    """Context manager: run with `n` torch threads (default `pick_threads()`), then restore."""

    def __init__(self, n: int | None = None):
        self.n = n

    def __enter__(self) -> int:
        import torch

        self.old = torch.get_num_threads()
        n = self.n or pick_threads()
        torch.set_num_threads(n)
        return n

    def __exit__(self, *exc) -> None:
        import torch

        torch.set_num_threads(self.old)


def testbed_cache_dir() -> Path:
    from rearl.backends.embedded import cache_dir

    return cache_dir() / "testbed"


# -- model ------------------------------------------------------------------------------------------
def make_model(tokenizer: Any, size: ModelSize, seed: int):
    """A tiny Llama. Not Qwen2: for a directory whose config says qwen2, transformers 5's
    AutoTokenizer swaps in its byte-level Qwen2Tokenizer and our word-level tokenizer is lost."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.heads,
        max_position_embeddings=size.max_positions, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.eos_token_id
    return model


# -- SFT data -----------------------------------------------------------------------------------------
def doc_batches(tokenizer: Any, cfg: ToyConfig, chunk: int = 1024) -> Iterator[tuple[Any, Any, int]]:
    """Endless (input, label, real tokens) batches of whole documents, each from position 0.

    One document per row (prompt + completion + EOS), rows of similar length together, padded on
    the right to at most `cfg.batch * cfg.block` tokens a batch. Not packed: with several documents
    in a row, the digit lookup ("the digit after tag xb") also matches earlier documents' digits,
    and each document starts at a random position, unlike inference. Packed builds learnt the
    lookup late and unevenly (greedy accuracy from 5% to 98% across builds). Right padding needs no
    attention mask: under the causal mask a real token never sees the pads after it.

    The loss covers only the completion and its stop EOS: the question's digits are random. In the
    `finish_frac` finish-from-a-cut documents it covers only the box after the forced `</think>`.
    """
    import torch

    think_id = tokenizer.convert_tokens_to_ids("<think>")
    close_id = tokenizer.convert_tokens_to_ids("</think>")
    pad_id = tokenizer.pad_token_id
    tasks = iter_tasks(cfg.levels, seed=cfg.seed, weights=cfg.level_weights)
    rng = random.Random(f"rearl-testbed-sft:{cfg.seed}")
    backend = tokenizer.backend_tokenizer
    budget = cfg.batch * cfg.block
    while True:
        docs, finish = [], []
        for _ in range(chunk):
            tr = make_trace(next(tasks), rng)
            finish.append(rng.random() < cfg.finish_frac)
            docs.append(finish_document(tr, rng) if finish[-1] else tr.document)
        rows = []
        for enc, fin in zip(backend.encode_batch(docs, add_special_tokens=False), finish):
            d = enc.ids[: budget]
            # the prompt ends with "<think>" "\n"; a finish document's box follows "</think>" "\n" "\n"
            start = d.index(close_id) + 3 if fin else d.index(think_id) + 2
            rows.append((d, [-100] * start + d[start:]))
        rows.sort(key=lambda r: len(r[0]))
        # widths rounded up to 32: every new tensor shape costs the CPU kernels a fresh setup
        # (5.7k tok/s with exact widths vs 7.6k packed)
        wide = lambda r: min(budget, -(-len(r[0]) // 32) * 32)  # noqa: E731
        groups, cur = [], []
        for r in rows:
            if cur and (len(cur) + 1) * wide(r) > budget:
                groups.append(cur)
                cur = []
            cur.append(r)
        groups.append(cur)
        rng.shuffle(groups)
        for g in groups:
            width = wide(g[-1]) + 1  # + 1: inputs and labels are shifted copies
            x = torch.full((len(g), width), pad_id, dtype=torch.long)
            y = torch.full((len(g), width), -100, dtype=torch.long)
            for k, (d, lab) in enumerate(g):
                x[k, : len(d)] = torch.tensor(d)
                y[k, : len(d)] = torch.tensor(lab)
            yield x[:, :-1], y[:, 1:], sum(len(d) for d, _ in g)


def lr_at(cfg: ToyConfig, step: int, frac: float) -> float:
    """Warmup, then constant, then linear decay to `final_lr_frac` over the last `decay_frac` of the
    budget (`frac` = share of the planned steps done). One build with the LR held for 75% of 9M tokens came out
    worse than those with a decay from the start over 6M (loss 0.093 vs 0.079-0.083)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    into_decay = (min(1.0, frac) - (1.0 - cfg.decay_frac)) / cfg.decay_frac
    return cfg.lr * (1.0 - (1.0 - cfg.final_lr_frac) * max(0.0, into_decay))


def sft(model: Any, tokenizer: Any, cfg: ToyConfig, progress: bool = True,
        max_steps: int | None = None) -> dict[str, Any]:
    """Train on `cfg.sft_tokens` tokens (or until the optional `cfg.budget_minutes` cap); returns a log."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    budget = float("inf") if cfg.budget_minutes is None else cfg.budget_minutes * 60.0
    total_steps = max(1, cfg.sft_tokens // (cfg.batch * cfg.block))
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    batches = doc_batches(tokenizer, cfg)
    curve: list[tuple[int, float]] = []
    t0 = time.monotonic()
    step = tokens = real = 0
    ema = None
    cut = False
    bar = tqdm(total=total_steps, unit="step", desc="toy LRM SFT", disable=not progress)
    try:
        while step < total_steps:
            elapsed = time.monotonic() - t0
            if elapsed >= budget:
                cut = True
                break
            x, y, n_real = next(batches)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, step / total_steps)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens += x.numel()
            real += n_real
            lv = float(loss.detach())
            ema = lv if ema is None else 0.95 * ema + 0.05 * lv
            if step % 25 == 0 or step == 1:
                curve.append((step, round(ema, 4)))
            now = time.monotonic() - t0
            bar.set_postfix_str(f"loss {ema:.3f} {real / max(now, 1e-9):.0f} tok/s", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    model.eval()
    seconds = time.monotonic() - t0
    if cut:
        import sys
        import warnings

        msg = (f"toy LRM SFT hit its {cfg.budget_minutes:g}-minute cap after {step} of {total_steps} steps: this build "
               f"is NOT the seeded model (raise or drop the cap: --toy-budget-minutes)")
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)
    return {"steps": step, "planned_steps": total_steps, "cut_by_time_cap": cut, "tokens": tokens,
            "document_tokens": real,  # `tokens` less the padding
            "seconds": round(seconds, 1),
            "tokens_per_second": round(real / max(seconds, 1e-9)), "final_loss": round(ema or float("nan"), 4),
            "loss_curve": curve}


# -- the cached build ----------------------------------------------------------------------------------
def is_built(path: Path) -> bool:
    return (Path(path) / COMPLETE).exists()


def build_toy_lrm(cache_dir: str | os.PathLike | None = None, *, budget_minutes: float | None = None,
                  sft_tokens: int | None = None, seed: int = 0, quick: bool = False,
                  config: ToyConfig | None = None, force: bool = False, progress: bool = True,
                  probe_per_level: int | None = None, threads: int | None = None) -> Path:
    """Train (once) and return the directory of the toy overthinking LRM (model + tokenizer).

    `cache_dir` defaults to `rearl.backends.embedded.cache_dir() / "testbed"`; the entry is named after the
    configuration's hash, so changing any setting trains a new model. SFT runs on `sft_tokens`
    tokens (default 9M) unless `budget_minutes` of SFT run out
    first. `quick` builds a small model in about a minute (for tests; it is not accurate).
    `config` overrides everything else. The finished build is loaded back and probed: greedy
    accuracy by level on `probe_per_level` problems each (default 10, quick 2; 0 skips), stored in
    its `testbed.json` under "probe". `threads`: torch threads for the build (default: the idle
    cores, `pick_threads()`; measured here: 12.7k document tokens/s on 2 threads, 7.3k on 1).
    """
    if config is None:
        config = quick_config(seed) if quick else ToyConfig(seed=seed)
        if budget_minutes is not None:
            config = replace(config, budget_minutes=float(budget_minutes))
        if sft_tokens is not None:
            config = replace(config, sft_tokens=int(sft_tokens))
    config = config.resolved()
    if threads is None and config.quick:
        threads = 1  # a small model gains little from a second thread, and one thread builds the same model anywhere
    root = Path(cache_dir) if cache_dir is not None else testbed_cache_dir()
    target = root / config.dirname()
    if is_built(target) and not force:
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        if probe_per_level is None:
            probe_per_level = 2 if config.quick else 10
        _build_into(tmp, config, progress, probe_per_level, threads)
        if target.exists():
            if is_built(target) and not force:  # another process finished first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _build_into(out: Path, cfg: ToyConfig, progress: bool, probe_per_level: int = 0, threads: int | None = None) -> None:
    from rearl.core.io import write_json_atomic
    from rearl.testbed.tasks import make_tasks

    t0 = time.monotonic()
    corpus_tasks = make_tasks(cfg.tokenizer_corpus, cfg.levels, seed=cfg.seed + 10_000)
    tokenizer = train_tokenizer([t.document for t in make_traces(corpus_tasks, seed=cfg.seed + 10_000)])
    model = make_model(tokenizer, cfg.size, cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    with torch_threads(threads) as threads:
        log = sft(model, tokenizer, cfg, progress=progress)
    model = model.float()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    meta = {
        "config": asdict(cfg),
        "levels": level_table(),
        "vocab_size": len(tokenizer),
        "parameters": n_params,
        "sft": log,
        "build_seconds": round(time.monotonic() - t0, 1),
        "torch_threads": threads,
    }
    if probe_per_level > 0:
        # Load back from disk (what every user does) and score a few greedy answers: a build that
        # did not learn the task says so in its metadata instead of surprising the next stage.
        meta["probe"] = probe(out, probe_per_level, cfg.levels)
    write_json_atomic(out / META, meta)
    (out / COMPLETE).write_text(f"{cfg.dirname()}\n")


PROBE_TOKENS = 640  # greedy traces take every echo: up to ~600 tokens in world v2


def probe(path: str | os.PathLike, per_level: int, levels: Sequence[int] = tuple(LEVELS)) -> dict[str, Any]:
    """Greedy accuracy (%) by level on `per_level` fresh problems each (seed 777)."""
    from rearl.testbed.stats import sample_records, summarize
    from rearl.testbed.tasks import make_tasks

    tasks = make_tasks(per_level * len(levels), levels, seed=777)
    with torch_threads():
        recs = sample_records(str(path), tasks, temperature=0.0, max_new_tokens=PROBE_TOKENS, batch_size=len(tasks),
                              no_check=False, progress=False)
    return {k: v["accuracy"] for k, v in summarize(recs).items()} | {"per_level": per_level}


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / META).read_text())
