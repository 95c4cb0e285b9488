"""vLLM's offline engine as a policy backend (GPU): fast sampling for evaluation."""

from __future__ import annotations

from typing import Any, Sequence

from rearl.core.revision import Generation


# -- vLLM offline engine (GPU) -------------------------------------------------------------------
class VLLMPolicy:
    """Samples with vLLM's offline engine (`vllm.LLM`), same `generate` interface as `HFPolicy`.

    GPU only and untested on CPU CI (vLLM is not installed there): kept deliberately thin. Prompts go
    in as token ids; `seeds` gives every prompt its own seed, so n samples of one prompt differ and a
    resumed evaluation redraws the same samples. `lora` is a LoRA adapter directory served on top of
    `model_path` (the authors evaluate their policies this way, docs/evaluation.md).
    """

    def __init__(self, model_path: str, tokenizer: str | None = None, dtype: str = "auto", lora: str | None = None,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9, max_lora_rank: int = 64,
                 **engine_kw: Any):
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError("the vLLM backend needs vllm on a GPU machine: pip install -e '.[gpu]'") from e
        from rearl.backends.embedded import resolve_model

        path = str(resolve_model(model_path))
        kw: dict[str, Any] = {"dtype": dtype, "gpu_memory_utilization": gpu_memory_utilization, **engine_kw}
        if max_model_len:
            kw["max_model_len"] = max_model_len
        if lora:
            kw.update(enable_lora=True, max_lora_rank=max_lora_rank)
        self.llm = LLM(model=path, tokenizer=tokenizer or path, **kw)
        self.tokenizer = self.llm.get_tokenizer()
        self._lora = None
        if lora:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("policy", 1, lora)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, temperature: float = 0.6,
                 top_p: float = 1.0, top_k: int = 50, seed: int | None = None,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        from vllm import SamplingParams

        if seeds is None:
            seeds = [None if seed is None else seed + i for i in range(len(prompts))]
        params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 top_k=top_k if top_k and top_k > 0 else -1, seed=s) for s in seeds]
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, lora_request=self._lora,
                                 use_tqdm=False)
        eos = self.tokenizer.eos_token_id
        res = []
        for o in outs:
            c = o.outputs[0]
            ids = [int(t) for t in c.token_ids]
            finished = c.finish_reason == "stop"
            # A finished sample must end with the token that stopped it (callers strip it); vLLM keeps
            # it in token_ids, but make sure. stop_reason is None for EOS, the id for a stop token.
            stop = c.stop_reason if isinstance(c.stop_reason, int) else eos if c.stop_reason is None else None
            if finished and stop is not None and (not ids or ids[-1] != stop):
                ids.append(int(stop))
            res.append(Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=False), finished))
        return res
