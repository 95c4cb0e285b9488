"""In-process transformers models (CPU or GPU): `HFReflectionScorer` scores paragraphs with a
reflection model, `HFPolicy` continues token-id prefixes. torch and transformers are imported
lazily, so importing this module stays cheap."""

from __future__ import annotations

import time
from typing import Any, Sequence

from rearl.core.revision import Generation
from rearl.reflector.prompt import (
    SCORING_MODES,
    ReflectionPrompt,
    ScoreOutcome,
    build_prompt,
    build_skeleton,
    read_p_result,
    reply_budget,
)


# -- in-process transformers ----------------------------------------------------------------------
def load_hf(model_path: str, device: str = "cpu", dtype: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.backends.embedded import resolve_model

    path = resolve_model(model_path)
    tok = AutoTokenizer.from_pretrained(path)
    torch_dtype = getattr(torch, dtype) if dtype else (torch.float32 if device == "cpu" else torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, model


def left_pad(rows: Sequence[Sequence[int]], pad_id: int):
    """(ids, attention_mask) tensors, left-padded: what batched `generate` needs."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, r in enumerate(rows):
        ids[k, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[k, width - len(r):] = 1
    return ids, mask


def cut_at_eos(row: Sequence[int], eos: set[int]) -> tuple[list[int], bool]:
    """New tokens up to and including the first EOS, and whether there was one."""
    new = []
    for t in row:
        new.append(int(t))
        if t in eos:
            return new, True
    return new, False


def _context_len(model: Any, default: int = 8192) -> int:
    return int(getattr(model.config, "max_position_embeddings", None) or default)


class HFReflectionScorer:
    """Scores traces with a transformers reflection model in this process."""

    def __init__(self, model_path: str = "default", device: str = "cpu", dtype: str | None = None,
                 batch_size: int = 4, max_context: int | None = None, top_k: int = 5):
        self.tokenizer, self.model = load_hf(model_path, device, dtype)
        self.device, self.batch_size, self.top_k = device, batch_size, top_k
        self.max_context = max_context or _context_len(self.model)

    def prompts(self, problems: Sequence[str], paragraphs: Sequence[Sequence[str]]) -> list[ReflectionPrompt]:
        return [build_prompt(self.tokenizer, q, ps, self.max_context) for q, ps in zip(problems, paragraphs)]

    def score(self, problems: Sequence[str], paragraphs: Sequence[Sequence[str]], mode: str = "forward") -> list[ScoreOutcome]:
        if mode not in SCORING_MODES:
            raise ValueError(f"mode must be one of {SCORING_MODES}, got {mode!r}")
        out: list[ScoreOutcome] = []
        prompts: list[ReflectionPrompt | None] = []
        for q, ps in zip(problems, paragraphs):
            try:
                prompts.append(build_prompt(self.tokenizer, q, ps, self.max_context) if ps else None)
            except ValueError as e:
                prompts.append(None)
                out.append(ScoreOutcome(None, len(ps), error=str(e)))
                continue
            out.append(ScoreOutcome(None, len(ps)))
        todo = [i for i, p in enumerate(prompts) if p is not None]
        for k in range(0, len(todo), self.batch_size if mode == "generate" else 1):
            chunk = todo[k : k + (self.batch_size if mode == "generate" else 1)]
            t0 = time.perf_counter()
            try:
                if mode == "forward":
                    res = [self._forward(prompts[i]) for i in chunk]
                else:
                    res = self._generate([prompts[i] for i in chunk])
            except Exception as e:  # noqa: BLE001 - reported per trace
                res = [(None, None, f"{type(e).__name__}: {e}")] * len(chunk)
            dt = (time.perf_counter() - t0) / len(chunk)
            for i, (p, reply, err) in zip(chunk, res):
                o = out[i]
                o.p_result, o.reply, o.error, o.seconds = p, reply, err, dt
                o.n_shown = prompts[i].n_shown
        for o in out:
            if o.p_result is None and o.error is None and o.n_paragraphs == 0:
                o.p_result = []
        return out

    def _forward(self, prompt: ReflectionPrompt):
        import torch

        sk = build_skeleton(self.tokenizer, prompt)
        ids = torch.tensor([sk.ids], device=self.device)
        keep = torch.tensor([s - 1 for s in sk.slots], device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids, logits_to_keep=keep).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        pt, pr = logp[:, sk.think_id].exp(), logp[:, sk.result_id].exp()
        p = (pr / (pt + pr).clamp_min(1e-30)).tolist()
        return p, None, None

    def _generate(self, prompts: list[ReflectionPrompt]):
        import torch

        tok = self.tokenizer
        pad = tok.pad_token_id
        ids, mask = left_pad([p.ids for p in prompts], pad)
        width = ids.shape[1]
        max_new = max(reply_budget(p.n_shown) for p in prompts)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), do_sample=False,
                max_new_tokens=max_new, output_logits=True, return_dict_in_generate=True,
                pad_token_id=pad, temperature=None, top_p=None, top_k=None,
            )
        new = out.sequences[:, width:]
        eos = set(_eos_ids(tok, self.model))
        results = []
        for r, p in enumerate(prompts):
            steps = []
            for t in range(new.shape[1]):
                tid = int(new[r, t])
                if tid in eos:
                    break
                logp = torch.log_softmax(out.logits[t][r].float(), dim=-1)
                top = torch.topk(logp, self.top_k)
                steps.append([(tok.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)])
            reply_ids = [int(x) for x in new[r] if int(x) not in eos and int(x) != pad]
            results.append((read_p_result(steps, p.n_paragraphs), tok.decode(reply_ids), None))
        return results


def _eos_ids(tok: Any, model: Any) -> list[int]:
    ids = set()
    for v in (getattr(tok, "eos_token_id", None), getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return sorted(ids)


class HFPolicy:
    """Continues token-id prefixes with a transformers policy (sampling settings of docs/method.md#sequential-revision)."""

    def __init__(self, model_path: str = "default", device: str = "cpu", dtype: str | None = None, batch_size: int = 8,
                 model: Any = None, tokenizer: Any = None):
        if model is not None:
            self.model, self.tokenizer = model, tokenizer
        else:
            self.tokenizer, self.model = load_hf(model_path, device, dtype)
        self.device, self.batch_size = device, batch_size

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, temperature: float = 0.6,
                 top_p: float = 1.0, top_k: int = 50, seed: int | None = None) -> list[Generation]:
        import torch

        if seed is not None:
            torch.manual_seed(seed)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = set(_eos_ids(tok, self.model))
        out: list[Generation] = []
        for k in range(0, len(prompts), self.batch_size):
            ids, mask = left_pad(prompts[k : k + self.batch_size], pad)
            width = ids.shape[1]
            sample = temperature > 0
            with torch.no_grad():
                seqs = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_new_tokens,
                    do_sample=sample, temperature=temperature if sample else None, top_p=top_p if sample else None,
                    top_k=top_k if sample else None, pad_token_id=pad,
                )
            for row in seqs[:, width:].tolist():
                new, finished = cut_at_eos(row, eos)
                out.append(Generation(new, tok.decode(new, skip_special_tokens=False), finished))
        return out
