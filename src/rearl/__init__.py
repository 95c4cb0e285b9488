"""rearl: REA-RL (reflection-aware online RL, arXiv 2505.19862) for efficient reasoning.

The names a Python user calls are exported here; the heavy ones (the trainer pulls in torch and
TRL) are imported on first use, so `import rearl` stays cheap. The parts:

* `rearl.core`: the framework-free logic (splitting, reflection counting, answers, rewards, cuts,
  revision, group policies);
* `rearl.backends`: in-process transformers, OpenAI-compatible servers, vLLM;
* `rearl.reflector`: the reflection model (prompt, teacher labels, SFT, quality report);
* `rearl.train`: `REARLConfig`, `REARLTrainer`, the `rearl train` job, offline baselines;
* `rearl.eval`: benchmarks, sampling, metrics, reports;
* `rearl.offline`: `rearl detect` and `rearl revise` on trace files;
* `rearl.testbed`: the CPU testbed (a toy overthinking model and the whole story).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # rewards (TRL reward-function signature)
    "AccuracyReward": "rearl.core.rewards",
    "AdaptiveLengthReward": "rearl.core.rewards",
    "KimiLengthReward": "rearl.core.rewards",
    "RefinedLengthReward": "rearl.core.rewards",
    "ReflectionReward": "rearl.core.rewards",
    # reflection threshold
    "calibrate": "rearl.core.reflection",
    "count_reflections": "rearl.core.reflection",
    # splitting and detection
    "segment": "rearl.core.text",
    "oracle_detect": "rearl.core.detectors",
    "model_detect": "rearl.core.detectors",
    "first_reflection_detect": "rearl.core.detectors",
    "ratio_detect": "rearl.core.detectors",
    "cut_positions": "rearl.core.positions",
    "revise": "rearl.core.revision",
    # training
    "REARLConfig": "rearl.train.config",
    "REARLTrainer": "rearl.train.trainer",
    # evaluation
    "EvalConfig": "rearl.eval.run",
    "evaluate": "rearl.eval.run",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'rearl' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
