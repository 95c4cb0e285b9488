"""Generation backends: where the policy and the reflection model run.

One file per engine, each with the same two interfaces (a reflection scorer with
``score(problems, paragraphs, mode)`` and a policy with ``generate(prompt_ids, ...)``):

* ``hf``: a transformers model in this process (CPU or GPU);
* ``server``: any OpenAI-compatible ``/v1/completions`` server with logprobs (``vllm serve``,
  llama.cpp's ``llama-server``), with timeouts and bounded retries;
* ``vllm``: vLLM's offline engine (GPU) for fast sampling in evaluation;
* ``embedded``: the embedded default model (SmolLM2-135M-Instruct from a PyPI package).

The engines are imported only when a factory asks for them, so importing this package pulls in
neither torch nor vLLM.
"""

from __future__ import annotations

from typing import Any


def is_url(s: str | None) -> bool:
    return bool(s) and str(s).startswith(("http://", "https://"))


def reflection_scorer(model: str, tokenizer: str | None = None, **kw: Any):
    """A URL gives the server scorer, anything else an in-process model (`default` = embedded)."""
    if is_url(model):
        from rearl.backends.server import OpenAIReflectionScorer

        return OpenAIReflectionScorer(model, tokenizer=tokenizer, **{k: v for k, v in kw.items() if k in (
            "timeout", "retries", "max_context", "concurrency", "top_k", "api_key")})
    from rearl.backends.hf import HFReflectionScorer

    return HFReflectionScorer(model, **{k: v for k, v in kw.items() if k in ("device", "dtype", "batch_size", "max_context", "top_k")})


def policy_backend(model: str, tokenizer: str | None = None, **kw: Any):
    """A URL gives the server policy, anything else an in-process model (`default` = embedded)."""
    if is_url(model):
        from rearl.backends.server import OpenAIPolicy

        return OpenAIPolicy(model, tokenizer=tokenizer, **{k: v for k, v in kw.items() if k in (
            "timeout", "retries", "concurrency", "api_key")})
    from rearl.backends.hf import HFPolicy

    return HFPolicy(model, **{k: v for k, v in kw.items() if k in ("device", "dtype", "batch_size")})
