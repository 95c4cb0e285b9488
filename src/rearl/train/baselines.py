"""Offline baselines of docs/method.md#baselines, built from `rearl revise` outputs.

* ``sft``: supervised fine-tuning on cut-and-completed traces whose revision is correct (at most
  `max_per_problem` per problem, as the authors), loss on the completion only.
* ``rpo``: DPO with an NLL term on the chosen side (Pang et al. 2024, "Iterative Reasoning
  Preference Optimization"): chosen = the correct revision, rejected = its original full response.
  TRL 1.16 expresses RPO as `loss_type=["sigmoid", "sft"]` with weights [1, 1] (the authors'
  `rpo_alpha=1.0` on TRL 0.16); beta 0.1.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHODS = ("sft", "rpo")
from rearl.options import option


@dataclass
class BaselineConfig:
    """Options of `rearl baseline sft|rpo` (and `train_baseline`)."""

    method: str = option(help="sft: fine-tune on correct revisions; rpo: prefer them over the originals",
                         choices=("sft", "rpo"), positional=True)
    revised: str = option(help="output of `rearl revise`")
    output_dir: str = option(help="output directory (a merged, plain checkpoint)", flag="--out")
    base: str = option("default", "the policy the revisions came from")
    position: str = option("normal", "which cut's revisions to use")
    max_per_problem: int = option(4, "revisions kept per problem")
    use_peft: bool = option(True, "full fine-tune instead of LoRA", flag="--full")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    learning_rate: float = option(2e-5, "learning rate")
    num_train_epochs: float = option(1.0, "epochs (when --max-steps is not set)")
    max_steps: int = option(-1, "optimizer steps (-1: one pass of --num-train-epochs)")
    per_device_train_batch_size: int = option(2, "examples per device and step", flag="--batch-size")
    gradient_accumulation_steps: int = option(8, "steps accumulated per optimizer step")
    max_length: int | None = option(10240, "longest example in tokens")
    beta: float = option(0.1, "RPO/DPO beta")
    seed: int = option(0, "seed")
    use_cpu: bool | None = option(None, "train on the CPU (default: when no GPU is present)", cli=False)
    report_to: list[str] | str = option(default_factory=lambda: ["none"], help="trackers", cli=False)
    logging_steps: int = option(1, "log every N steps")
    save_steps: int = option(500, "checkpoint every N steps")


def build_pairs(cfg: BaselineConfig, tokenizer: Any) -> list[dict[str, str]]:
    """Rows {prompt, completion} (sft) or {prompt, chosen, rejected} (rpo) from revise outputs."""
    from rearl.core.io import DataError, read_jsonl
    from rearl.core.prompts import math_messages
    from rearl.core.traces import load_traces
    from rearl.offline.detect import summary_path

    sp = Path(summary_path(cfg.revised))
    if not sp.exists():
        raise DataError(f"{sp}: missing; run `rearl revise` first (it writes the summary naming the traces)")
    summary = json.loads(sp.read_text())
    cuts_summary = Path(summary_path(summary["cuts"]))
    fields = json.loads(cuts_summary.read_text()).get("fields", {}) if cuts_summary.exists() else {}
    traces = {t.id: t for t in load_traces(summary["input"], fields.get("problem"), fields.get("answer"),
                                           fields.get("response"))}
    per_problem: dict[str, int] = defaultdict(int)
    rows = []
    for lineno, rec in read_jsonl(cfg.revised):
        if rec.get("position") != cfg.position or not rec.get("correct") or not rec.get("completed"):
            continue
        if "completion" not in rec:
            raise DataError(f"{cfg.revised}:{lineno}: no 'completion' (written by an older rearl revise; rerun it)")
        t = traces.get(str(rec["id"]))
        if t is None:
            raise DataError(f"{cfg.revised}:{lineno}: trace {rec['id']!r} is not in {summary['input']}")
        if per_problem[t.problem] >= cfg.max_per_problem:
            continue
        per_problem[t.problem] += 1
        prompt = tokenizer.apply_chat_template(math_messages(t.problem), tokenize=False, add_generation_prompt=True)
        if cfg.method == "sft":
            rows.append({"prompt": prompt, "completion": rec["completion"]})
        else:
            rows.append({"prompt": prompt, "chosen": rec["completion"], "rejected": t.response})
    if not rows:
        raise DataError(f"{cfg.revised}: no correct, finished revisions at position {cfg.position!r} to train on")
    return rows


def train_baseline(cfg: BaselineConfig) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.backends.embedded import resolve_model
    from rearl.core.io import write_json_atomic

    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
    path = resolve_model(cfg.base)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = build_pairs(cfg, tok)
    ds = Dataset.from_list(rows)
    cpu = cfg.use_cpu if cfg.use_cpu is not None else not torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if cpu else torch.bfloat16)
    peft_config = None
    if cfg.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    common = dict(output_dir=cfg.output_dir, learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
                  max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
                  gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
                  seed=cfg.seed, use_cpu=cpu, bf16=not cpu, report_to=cfg.report_to, logging_steps=cfg.logging_steps,
                  save_steps=cfg.save_steps, gradient_checkpointing=not cpu)
    if cfg.method == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(completion_only_loss=True, **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    else:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], beta=cfg.beta, **common)
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    trainer.train()
    final = trainer.accelerator.unwrap_model(trainer.model)
    if peft_config is not None:
        final = final.merge_and_unload()
    final.save_pretrained(cfg.output_dir)
    tok.save_pretrained(cfg.output_dir)
    result = {"method": cfg.method, "examples": len(rows), "global_step": trainer.state.global_step,
              "log_history": trainer.state.log_history}
    write_json_atomic(Path(cfg.output_dir) / "baseline_run.json", result)
    return result
