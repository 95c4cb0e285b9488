"""The testbed story's settings: `StoryConfig` (every setting with the measurement behind it), the methods
it compares (`METHODS`, mirroring recipes/cpu/) and their labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# What each method changes on top of the shared settings; mirrors recipes/<model>/<method>.yaml.
METHODS: dict[str, dict[str, Any]] = {
    "grpo": {"revision": False, "length_reward": "none", "reflection_reward": False},
    "grpo_len": {"revision": False, "length_reward": "kimi", "reflection_reward": False},
    "rea_rl": {"revision": True, "length_reward": "refined", "reflection_reward": True},
    # the upper bound of the learned reflection model: REA-RL cutting where the gold answer is first stated
    "rea_rl_oracle": {"revision": True, "length_reward": "refined", "reflection_reward": True,
                      "reflection_model": "oracle"},
    "rea_rl_no_reflection_model": {"revision": False, "length_reward": "refined", "reflection_reward": True,
                                   "zero_accuracy_groups": "keep"},
    "rea_rl_no_reflection_reward": {"revision": True, "length_reward": "refined", "reflection_reward": False},
    # the remedy the study tests beside REA-RL: its length reward replaced by ALP's adaptive length penalty
    # (scaled by the problem's solve rate, arXiv 2506.05256), which shifts GRPO's group vote towards a re-check
    # the policy cannot yet condition (docs/testbed.md#world-v5)
    "rea_rl_alp": {"revision": True, "length_reward": "alp", "reflection_reward": True},
    # not in the paper's tables: REA-RL with the Strong cut (right after the most likely Result paragraph)
    "rea_rl_strong": {"revision": True, "length_reward": "refined", "reflection_reward": True,
                      "reflection_position": "strong"},
}
LABELS = {"base": "Base", "grpo": "GRPO", "grpo_len": "GRPO+len", "rea_rl": "REA-RL", "rea_rl_oracle": "REA-RL (oracle cut)",
          "rea_rl_no_reflection_model": "REA-RL w/o refl. model", "rea_rl_no_reflection_reward": "REA-RL w/o refl. reward", "rea_rl_strong": "REA-RL (Strong cut)",
          "rea_rl_alp": "REA-RL + ALP"}


REFLECTION_MODELS = ("toy", "oracle", "smollm2")


@dataclass
class StoryConfig:
    """Options of `rearl testbed run` (defaults: the full story, about 35 minutes on 2 CPU cores after the
    toy LRM's 13-minute build; docs/testbed.md#measured)."""

    out: str = "runs/testbed"
    quick: bool = False  # a few-minute version: a small, inaccurate toy model and a handful of steps
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: ["grpo", "grpo_len", "rea_rl", "rea_rl_oracle"])
    # toy model (see toy_model.ToyConfig); None = its defaults
    toy_sft_tokens: int | None = None
    toy_budget_minutes: float | None = None
    toy_cache_dir: str | None = None
    # RL: every method gets the same start, tasks, seed and number of prompts. 90 steps: on world v2 at 60 steps
    # REA-RL reached 0.73 x the base's tokens, at 90 (REA-RL alone) 0.695 x with accuracy +9.5
    steps: int = 90
    prompts_per_step: int = 2
    group_size: int = 4  # G policy samples per prompt (REA-RL adds G revisions: 2G rows, docs/method.md#the-training-step)
    # the authors' schedule and KL (docs/training.md), a higher lr for a 0.8M-parameter policy: world v1's 3.2M
    # model at the authors' 2e-5 barely moved (P(</think>) 6e-5 -> 1e-4 in 100 steps). Measured on world v2 (60
    # steps, docs/testbed.md#settings-and-why): at 1e-4 plain GRPO lost 8 accuracy points and REA-RL 5.5; at 5e-5
    # GRPO kept its accuracy and REA-RL gained 4.5 while cutting 27% of the tokens
    learning_rate: float = 5e-5
    beta: float = 0.04
    # in-process sampling of training and evaluation: "lean" (rearl.backends.lean, the same distribution as
    # transformers' generate at 1.7-2x its speed on one core, bench/rollout_throughput.py) or "hf" (generate;
    # every result up to world v4 was sampled with it)
    rollout_backend: str = "lean"
    # the RL runs' seed (sampling, data order); None: `seed`. The study trains several seeds from one toy, one
    # set of tasks and one evaluation (rearl.testbed.study)
    train_seed: int | None = None
    loss_type: str = "dapo"  # TRL's loss_type; normalised over the generation batch, so a dropped revision is exactly out of the loss
    # sampling temperature of training (and of the base responses that calibrate T). Measured on world v2's toy
    # LRM (200 held-out tasks): accuracy 25% at T=1.0 (column sums wrong in 23% of the columns), 54% at 0.6;
    # at T=1 most groups had no correct sample, so neither the accuracy nor the length reward had a signal
    temperature: float = 0.7
    # generation budget (training and evaluation): world v2's reference traces are 370 tokens on average,
    # p99 570 (measured on 800 traces)
    max_tokens: int = 640
    # REA-RL's reflection model: "toy" (the toy LRM fine-tuned on oracle labels of the base responses, trained
    # before RL: rearl.testbed.toy_reflector), "oracle" (gold answer + verifier) or "smollm2" (the embedded
    # SmolLM2 with LoRA; 5 s a step on this CPU). "rea_rl_oracle" always cuts with the oracle: the upper bound
    reflection_model: str = "toy"
    # the toy reflector's fine-tuning (full, batch 4, cosine): its label loss flattens after ~150 steps on 240
    # base responses (learning_curve.png); 300 steps take ~8.5 min on one thread, beside the GRPO runs
    reflector_toy_steps: int = 300
    reflector_toy_lr: float = 1e-3
    train_tasks: int = 4000
    # the reflection model and the threshold are learnt from base responses on these many tasks
    # (320: the toy reflector learns from 240 of them; with 120 its Normal cut agreed with the teacher on 75% of
    # 40 held-out traces)
    calibration_tasks: int = 320
    # also train and report the SmolLM2 reflection model beside the RL runs (REA-RL cuts with `reflection_model`).
    # Off in the full story: on an AVX2-only 2-core CPU one SmolLM2 LoRA step takes longer than a whole toy RL
    # step, and the 80 steps would take a core for most of the story; the quick story keeps it (CI covers it)
    train_reflector: bool = False
    # what the reflection model learns from: the base model's responses ("base", as in the paper) or
    # the generator's reference traces ("reference": for the quick model, whose answers are rarely right)
    reflector_data: str = "base"
    # optimizer steps of 2 examples (SmolLM2-135M + LoRA: 4.5 s a step on 2 threads, 7.4 s on 1). Measured
    # on the toy's 120 training traces: 30 steps gave P(Result) AUROC 52 (chance) against the oracle,
    # 120 steps 90; 80 keeps the first `make demo` within 30 minutes
    reflector_steps: int = 80
    # evaluation
    eval_per_level: int = 50
    eval_temperature: float = 0.6
    threads: int | None = None  # torch CPU threads (None: torch's default; with jobs > 1: cores / jobs each)
    # independent stages (the methods' training, the base evaluation, the reflector; then the methods'
    # evaluations) run in this many processes at once. Measured here: a toy GRPO step takes 2.6 s on one
    # thread and 2.3 s on two, so two one-thread runs side by side nearly halve the wall time.
    jobs: int = 2
    # the toy LRM must reach this greedy accuracy (%) on every level of its build probe, or the story stops
    # before any RL: a model that never learnt the hard levels makes every later number meaningless
    probe_min_accuracy: float = 30.0
    # real traces measured beside the toy's (`rearl measure`); None = $REARL_SHARED/data/traces if present
    real_traces: list[str] | None = None

    def __post_init__(self):
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
        if self.reflector_data not in ("base", "reference"):
            raise ValueError(f"reflector_data must be 'base' or 'reference', got {self.reflector_data!r}")
        if self.reflection_model not in REFLECTION_MODELS:
            raise ValueError(f"reflection_model must be one of {', '.join(REFLECTION_MODELS)}, got {self.reflection_model!r}")
        for name in ("steps", "prompts_per_step", "group_size", "max_tokens", "train_tasks", "calibration_tasks",
                     "eval_per_level", "jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def quick_config(**overrides: Any) -> StoryConfig:
    """The few-minute story the end-to-end test runs (numbers mean nothing at this size)."""
    base = dict(quick=True, steps=3, prompts_per_step=2, group_size=2, train_tasks=64, calibration_tasks=8,
                reflector_steps=2, reflector_toy_steps=4, reflector_data="reference", eval_per_level=2, max_tokens=384,
                probe_min_accuracy=0.0, real_traces=[], train_reflector=True)
    return StoryConfig(**{**base, **overrides})
