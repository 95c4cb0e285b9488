"""Fine-tuning the reflection model on teacher labels (docs/reflection-model.md), with TRL's SFTTrainer.

Examples come from `rearl reflector label` (prompt-completion, conversational). They are tokenised
here rather than by TRL so that the training tokens are exactly the inference tokens: the prompt is
the reflection model's chat template over the user turn (generation prompt included) and the
completion `[1]. Think\\n[2]. Result ...` + EOS, encoded as one string without added special
tokens. (TRL's plain-text path calls the tokenizer with special tokens on, which prepends a
second BOS for templates that already start with one, e.g. the R1/Llama family.) Inference
encodes template + `[1].` the same way, so it is a token prefix of every training sequence; the
loss covers the completion only (TRL's `completion_mask`).

LoRA (r 16, alpha 32, dropout 0.05, every linear projection) by default, full fine-tuning as an
option. The result is merged and saved as a plain transformers checkpoint in `out/` (what
`rearl detect --detector model --model out` and `vllm serve out` load), with `rearl_reflector.json`
describing how it was trained. Trainer checkpoints go to `out/checkpoints/`; a rerun resumes from
the last one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from rearl.core.io import DataError, write_json_atomic
from rearl.options import option
from rearl.reflector.prompt import PREFILL

META_FILE = "rearl_reflector.json"
FORMAT = "rearl-reflector-v1"


@dataclass
class TrainConfig:
    """Options of `rearl reflector train`; a YAML recipe sets any of them (CLI flags win)."""

    data: list[str] = option(default_factory=list, help="label JSONL from `rearl reflector label` (repeatable)")
    out: str = option("", "output directory (merged model; checkpoints in OUT/checkpoints)")
    base: str = option("default", "base model: path or 'default' (embedded SmolLM2-135M-Instruct)")
    lora: bool = option(True, "full fine-tuning instead of LoRA", flag="--full")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    lora_target_modules: Any = option("all-linear", "'all-linear' or a list of module names", cli=False)
    learning_rate: float = option(2e-5, "learning rate")
    lr_scheduler_type: str = option("cosine", "learning-rate schedule (transformers' names)")
    warmup_ratio: float = option(0.03, "warm-up, as a fraction of the optimizer steps")
    weight_decay: float = option(0.0, "weight decay")
    num_train_epochs: float = option(1.0, "epochs", flag="--epochs")
    max_steps: int = option(-1, "optimizer steps (-1: from --epochs)")
    per_device_train_batch_size: int = option(1, "examples per device and step", flag="--batch-size")
    gradient_accumulation_steps: int = option(1, "steps accumulated per optimizer step", flag="--grad-accum")
    max_length: int = option(8192, "longer examples are shortened (trailing paragraphs dropped) or skipped")
    require_result: bool = option(True, "only traces with at least one Result paragraph (the paper's filter)",
                                  flag="--keep-traces-without-result")
    negatives_per_positive: float | None = option(None, "windows without a Result kept per window with one (default: all)")
    max_examples: int | None = option(None, "at most this many examples")
    bf16: bool = option(False, "bfloat16 training (GPU)")
    gradient_checkpointing: bool = option(False, "trade compute for memory")
    seed: int = option(1, "seed")
    logging_steps: int = option(5, "log every N steps")
    save_steps: int = option(50, "checkpoint every N steps")
    save_total_limit: int = option(2, "checkpoints kept")
    report_to: Any = option("none", "none | tensorboard | wandb ...")
    device: str = option("cpu", "cpu | cuda")
    dataloader_num_workers: int = option(0, "data loader processes")
    num_threads: int | None = option(None, "torch CPU threads (1 is fastest on a busy 2-core machine)", flag="--threads")
    resume: bool = option(True, "ignore checkpoints in OUT/checkpoints", flag="--no-resume")
    force: bool = option(False, "retrain even if OUT holds a finished model")


def load_train_config(path: str | None = None, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a YAML recipe (unknown keys are errors) with `overrides` on top (None = unset)."""
    import yaml

    values: dict[str, Any] = {}
    known = {f.name for f in fields(TrainConfig)}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise DataError(f"{path}: no such recipe") from None
        except yaml.YAMLError as e:
            raise DataError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: a recipe must be a mapping of option: value")
        for k, v in raw.items():
            if k not in known:
                raise DataError(f"{path}: unknown option {k!r} (known: {', '.join(sorted(known))})")
            values[k] = v
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("data"), str):
        values["data"] = [values["data"]]
    cfg = TrainConfig(**values)
    if not cfg.data:
        raise ValueError("no training data: give --data (label files)")
    if not cfg.out:
        raise ValueError("no output directory: give --out")
    return cfg


# -- examples -> tokens -------------------------------------------------------------------------
def render_example(tokenizer: Any, example: dict[str, Any]) -> tuple[str, str]:
    """(prompt text, completion text + EOS) in the reflection model's own chat template."""
    prompt, completion = example.get("prompt"), example.get("completion")
    if isinstance(completion, list):
        completion = completion[0]["content"] if completion else None
    if not isinstance(prompt, list) or not isinstance(completion, str):
        raise DataError("an SFT example needs prompt (a list of messages) and completion (a message or text)")
    if not completion.startswith(PREFILL):
        raise DataError(f"completion must start with the prefill {PREFILL!r}: {completion[:40]!r}")
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return text, completion + (tokenizer.eos_token or "")


def encode_example(tokenizer: Any, example: dict[str, Any]) -> dict[str, list[int]]:
    """input_ids of prompt + completion and the mask of completion tokens."""
    prompt, completion = render_example(tokenizer, example)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    if ids[: len(p_ids)] != p_ids:
        raise DataError("the prompt's tokens are not a prefix of prompt + completion (tokens merge at the boundary)")
    return {"input_ids": ids, "completion_mask": [0] * len(p_ids) + [1] * (len(ids) - len(p_ids))}


def select_examples(records: Sequence[dict[str, Any]], cfg: TrainConfig) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The examples to train on, following `require_result` and `negatives_per_positive` (seeded)."""
    stats = {"traces": len(records), "traces_used": 0, "examples_available": 0}
    pos, neg = [], []
    for r in records:
        if cfg.require_result and not r.get("result_paragraphs"):
            continue
        exs = r.get("examples") or []
        if exs:
            stats["traces_used"] += 1
        paras = r.get("paragraphs")
        for e in exs:
            e = {**e, "problem": r["problem"]}
            if paras is not None:  # lets an over-long example be shortened the way inference does
                a = int(e.get("first_paragraph", 0))
                e["_paragraphs"] = paras[a : a + int(e["n_paragraphs"])]
                e["_result"] = [i - a for i in r["result_paragraphs"] if a <= i < a + int(e["n_paragraphs"])]
            (pos if e.get("n_result") else neg).append(e)
    stats["examples_available"] = len(pos) + len(neg)
    rng = random.Random(cfg.seed)
    if cfg.negatives_per_positive is not None and len(neg) > cfg.negatives_per_positive * len(pos):
        neg = rng.sample(neg, int(round(cfg.negatives_per_positive * len(pos))))
    chosen = pos + neg
    rng.shuffle(chosen)
    if cfg.max_examples is not None:
        chosen = chosen[: cfg.max_examples]
    stats.update(examples=len(chosen), examples_with_result=sum(1 for e in chosen if e.get("n_result")))
    return chosen, stats


def encode_examples(tokenizer: Any, examples: Sequence[dict[str, Any]], max_length: int
                    ) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    """Tokenised examples that fit `max_length`.

    An example that does not fit loses its trailing paragraphs exactly as `build_prompt` shortens an
    over-long trace at inference (truncating the token sequence instead would teach labels for
    paragraphs the prompt no longer shows). One that cannot be shortened is dropped and counted.
    """
    from rearl.reflector.labels import sft_example
    from rearl.reflector.prompt import build_prompt

    out: list[dict[str, list[int]]] = []
    counts = {"shortened": 0, "dropped_too_long": 0}
    for e in examples:
        enc = encode_example(tokenizer, e)
        if len(enc["input_ids"]) > max_length and e.get("_paragraphs"):
            try:
                k = build_prompt(tokenizer, e["problem"], e["_paragraphs"], max_length).n_shown
            except ValueError:
                k = 0
            if k:
                enc = encode_example(tokenizer, sft_example(e["problem"], e["_paragraphs"][:k], set(e["_result"])))
                counts["shortened"] += 1
        if len(enc["input_ids"]) > max_length:
            counts["dropped_too_long"] += 1
            continue
        out.append(enc)
    return out, counts


def _fingerprint(encoded: Sequence[dict[str, list[int]]], cfg: TrainConfig) -> str:
    h = hashlib.sha1()
    for e in encoded:
        h.update(json.dumps(e["input_ids"]).encode())
    keys = ("base", "lora", "lora_r", "lora_alpha", "lora_target_modules", "learning_rate", "seed",
            "per_device_train_batch_size", "gradient_accumulation_steps")
    h.update(json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def is_trained(out: str) -> bool:
    return (Path(out) / META_FILE).exists() and (Path(out) / "config.json").exists()


def read_meta(model_dir: str) -> dict[str, Any]:
    p = Path(model_dir) / META_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


# -- training -----------------------------------------------------------------------------------
def train_reflector(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train, merge and save; returns the metadata written to `out/rearl_reflector.json`."""
    if is_trained(cfg.out) and not cfg.force:
        meta = read_meta(cfg.out)
        meta["skipped"] = "already trained (use --force to retrain)"
        return meta
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    from rearl.backends.embedded import resolve_model
    from rearl.reflector.labels import read_labels

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    t0 = time.perf_counter()
    records = [r for path in cfg.data for r in read_labels(path)]
    examples, stats = select_examples(records, cfg)
    if not examples:
        raise DataError(f"{', '.join(cfg.data)}: no training examples (traces with a Result paragraph: "
                        f"{sum(1 for r in records if r.get('result_paragraphs'))})")
    base = resolve_model(cfg.base)
    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    encoded, counts = encode_examples(tok, examples, cfg.max_length)
    if not encoded:
        raise DataError(f"every example is longer than max_length={cfg.max_length}; label with --window-tokens")
    stats.update(counts)
    stats["train_tokens"] = sum(len(e["input_ids"]) for e in encoded)
    stats["completion_tokens"] = sum(sum(e["completion_mask"]) for e in encoded)

    work = Path(cfg.out) / "checkpoints"
    work.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(encoded, cfg)
    fp_file = work / "rearl_data.json"
    last = get_last_checkpoint(str(work)) if cfg.resume else None
    if last is not None:
        old = json.loads(fp_file.read_text()) if fp_file.exists() else {}
        if old.get("fingerprint") != fp:
            raise DataError(f"{work}: checkpoints were made from other data or settings; "
                            "remove the directory or pass --no-resume")
    write_json_atomic(fp_file, {"fingerprint": fp, **stats})

    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(work), learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
        # transformers 5 takes the warmup ratio as a float in [0, 1) in warmup_steps
        warmup_steps=float(cfg.warmup_ratio), weight_decay=cfg.weight_decay, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to, use_cpu=cfg.device == "cpu", dataloader_num_workers=cfg.dataloader_num_workers,
        disable_tqdm=not progress, completion_only_loss=True, max_length=None, packing=False,
        remove_unused_columns=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(encoded), processing_class=tok,
                         peft_config=peft_config)
    result = trainer.train(resume_from_checkpoint=last)
    trained = trainer.model
    if cfg.lora:
        trained = trained.merge_and_unload()
    meta = {
        "format": FORMAT, "base": cfg.base, "base_path": base, "data": list(cfg.data),
        "teacher": sorted({str(r.get("teacher")) for r in records}),
        "window_tokens": _window_tokens(records), "tokenizer": sorted({str(r.get("tokenizer")) for r in records}),
        "max_think_tokens": sorted({r.get("max_think_tokens") or 0 for r in records}),
        "lora": ({"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                  "target_modules": cfg.lora_target_modules} if cfg.lora else None),
        "steps": trainer.state.global_step, "train_loss": float(result.training_loss),
        "resumed_from": last, "seconds": round(time.perf_counter() - t0, 1), **stats,
        "config": asdict(cfg),
    }
    save_merged(trained, tok, cfg.out, meta)
    write_json_atomic(Path(cfg.out) / "train_log.json", trainer.state.log_history)
    return meta


def _window_tokens(records: Sequence[dict[str, Any]]) -> int | None:
    w = {r.get("window_tokens") for r in records}
    if len(w) > 1:
        raise DataError(f"label files mix window sizes {sorted(w, key=str)}: train on one kind of example")
    return next(iter(w)) if w else None


def save_merged(model: Any, tokenizer: Any, out: str, meta: dict[str, Any]) -> None:
    """Save a loadable checkpoint into `out`, leaving `out/checkpoints` alone.

    Files are written to a temporary directory and moved in with config.json and the metadata
    last, so a kill mid-save never leaves a directory that looks finished.
    """
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / META_FILE).unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=d))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        names = sorted(os.listdir(tmp), key=lambda n: n == "config.json")
        for n in names:
            target = d / n
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / n, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json_atomic(d / META_FILE, meta)
