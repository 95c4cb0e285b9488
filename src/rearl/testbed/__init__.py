"""A CPU testbed for REA-RL: a toy world (column addition) and a toy overthinking reasoning model.

* `tasks`: graded, seedable addition problems with verifiable integer answers;
* `traces`: R1-style traces that state the answer, then keep re-checking it (useful re-checks on
  hard levels, redundant echoes on easy ones);
* `toy_model`: the tokenizer, a tiny Llama trained here by SFT on those traces, behind a cache;
* `stats`: what the model does: accuracy by level, reflections and tokens after the first correct
  answer, and the accuracy it would have without its re-checks.
"""

from rearl.testbed.tasks import (
    EASY,
    HARD,
    LEVELS,
    Level,
    Task,
    iter_tasks,
    make_tasks,
    write_jsonl,
)
from rearl.testbed.traces import (
    REVISION_SCAFFOLD,
    Trace,
    make_trace,
    make_traces,
    prompt_text,
)

__all__ = [
    "EASY", "HARD", "LEVELS", "Level", "Task", "iter_tasks", "make_tasks", "write_jsonl",
    "REVISION_SCAFFOLD", "Trace", "make_trace", "make_traces", "prompt_text",
    "build_toy_lrm",
]


def build_toy_lrm(*args, **kwargs):
    """See `rearl.testbed.toy_model.build_toy_lrm` (imported lazily: it pulls in torch)."""
    from rearl.testbed.toy_model import build_toy_lrm as build

    return build(*args, **kwargs)
