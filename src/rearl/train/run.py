"""`rearl train`: build the dataset, model, rewards and trainer from a recipe, and run it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rearl.core.io import DataError, write_json_atomic
from rearl.core.prompts import math_messages
from rearl.core.traces import ANSWER_FIELDS, PROBLEM_FIELDS, gold_from_field
from rearl.train.config import DataArgs, ModelArgs, REARLConfig


def load_train_dataset(data: DataArgs):
    """Rows {prompt (chat messages), problem, answer} from JSONL files of problems with gold answers."""
    from datasets import Dataset

    from rearl.core.io import read_jsonl

    if not data.train_files:
        raise DataError("no train_files in the recipe")
    rows = []
    skipped = 0
    for f in data.train_files:
        for lineno, rec in read_jsonl(f):
            pf = data.problem_field or next((k for k in PROBLEM_FIELDS if k in rec), None)
            af = data.answer_field or next((k for k in ANSWER_FIELDS + ("solution",) if k in rec), None)
            if pf is None or pf not in rec:
                raise DataError(f"{f}:{lineno}: no problem field (set problem_field)")
            if af is None or af not in rec:
                raise DataError(f"{f}:{lineno}: no answer field (set answer_field)")
            gold = gold_from_field(rec[af])
            if gold is None or not gold.strip():
                skipped += 1  # real sets have a few (DeepScaleR MATH: 2 of 7,474); no reward without a gold
                continue
            problem = str(rec[pf])
            rows.append({"prompt": math_messages(problem), "problem": problem, "answer": gold})
    if skipped:
        import logging

        logging.getLogger(__name__).warning("skipped %d training rows without a gold answer", skipped)
    if not rows:
        raise DataError(f"{', '.join(data.train_files)}: no usable rows")
    random.Random(data.data_seed).shuffle(rows)
    if data.max_train_samples is not None:
        rows = rows[: data.max_train_samples]
    return Dataset.from_list(rows)


def build_model(model_args: ModelArgs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.backends.embedded import resolve_model

    path = resolve_model(model_args.model_name_or_path)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, model_args.dtype))
    peft_config = None
    if model_args.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                                 target_modules=model_args.lora_target_modules, task_type="CAUSAL_LM")
    return model, tok, peft_config


def train(model_args: ModelArgs, data_args: DataArgs, cfg: REARLConfig, resume: bool = False,
          reflection_scorer: Any = None) -> dict[str, Any]:
    """Train and save the final model to `cfg.output_dir`; returns the final log entry."""
    from rearl.train.trainer import REARLTrainer

    warn_single_process_cpu_launch()
    dataset = load_train_dataset(data_args)
    model, tok, peft_config = build_model(model_args)
    trainer = REARLTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tok, peft_config=peft_config,
                           reflection_scorer=reflection_scorer)
    ckpt = None
    if resume:
        ckpts = sorted(Path(cfg.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        if not ckpts:
            raise FileNotFoundError(f"--resume: no checkpoint-* in {cfg.output_dir}")
        ckpt = str(ckpts[-1])
    trainer.train(resume_from_checkpoint=ckpt)
    trainer.save_model(cfg.output_dir)  # TRL/transformers: the main process writes, the others wait
    main = trainer.accelerator.is_main_process
    if main:  # one writer per file: several ranks writing the same files at once can interleave them
        tok.save_pretrained(cfg.output_dir)
    if peft_config is not None:
        # A plain checkpoint that `rearl eval` and vLLM load directly.
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if main:
            merged.save_pretrained(Path(cfg.output_dir) / "merged")
            tok.save_pretrained(Path(cfg.output_dir) / "merged")
    history = trainer.state.log_history
    if main:
        write_json_atomic(Path(cfg.output_dir) / "rearl_run.json", {
            "model": vars(model_args), "data": vars(data_args),
            "config": json.loads(cfg.to_json_string()), "global_step": trainer.state.global_step,
            "num_processes": trainer.accelerator.num_processes,
        })
    trainer.accelerator.wait_for_everyone()  # no rank returns before the files are written
    return history[-1] if history else {}


_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def single_process_cpu_launch(env: dict[str, str] | None = None) -> bool:
    """True when `accelerate launch --cpu --num_processes N` (N > 1) started this process alone.

    accelerate 1.15 starts several CPU processes only through mpirun (`--mpirun_hostfile`); without it,
    `--cpu --num_processes N` runs ONE process (it sets MASTER_ADDR, as for N > 1, but no world size),
    and training would silently run on a single rank. The working command is in docs/training.md."""
    import os

    env = os.environ if env is None else env
    if str(env.get("ACCELERATE_USE_CPU", "")).lower() not in ("true", "1", "yes"):
        return False
    if "MASTER_ADDR" not in env:
        return False
    return all(int(env.get(k, "1") or 1) <= 1 for k in _WORLD_SIZE_VARS)


def warn_single_process_cpu_launch() -> None:
    if single_process_cpu_launch():
        import logging

        logging.getLogger(__name__).warning(
            "accelerate launch --cpu --num_processes N started ONE process (accelerate starts several CPU "
            "processes only through mpirun). For several processes on CPU use: accelerate launch --config_file "
            "recipes/accelerate/multi_cpu.yaml -m rearl.cli train ... use_cpu=true (docs/training.md#several-processes)")
