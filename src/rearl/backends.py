"""Model backends: the reflection scorer and the revising policy, in-process or behind a server.

* ``HFReflectionScorer`` / ``HFPolicy``: a transformers model in this process (CPU or GPU).
* ``VLLMPolicy``: vLLM's offline engine for fast sampling on a GPU (evaluation).
* ``OpenAIReflectionScorer`` / ``OpenAIPolicy``: any OpenAI-compatible ``/v1/completions`` server
  with logprobs (``vllm serve``, llama.cpp's ``llama-server``). Requests have a timeout and bounded
  retries with back-off; a request that still fails is reported per trace, never retried forever
  (the authors' client loops forever on a non-200 reply, spec §7.3).

torch and transformers are imported lazily so the core stays importable without them.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from .reflector import ReflectionPrompt, build_prompt, build_skeleton, label_token_ids, read_p_result

SCORING_MODES = ("forward", "generate")


@dataclass
class ScoreOutcome:
    """P(Result) per paragraph for one trace, or the reason there is none."""

    p_result: list[float] | None
    n_paragraphs: int
    n_shown: int = 0
    reply: str | None = None  # generated text (generate mode)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Generation:
    ids: list[int]  # new tokens, EOS included when the model stopped by itself
    text: str
    finished: bool  # ended with EOS (not cut by max_new_tokens)


def is_url(s: str | None) -> bool:
    return bool(s) and str(s).startswith(("http://", "https://"))


# -- in-process transformers ----------------------------------------------------------------------
def load_hf(model_path: str, device: str = "cpu", dtype: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import resolve_model

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
        max_new = max(8 * p.n_shown for p in prompts) + 8
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
    """Continues token-id prefixes with a transformers policy (sampling settings of spec §2.6)."""

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


# -- vLLM offline engine (GPU) -------------------------------------------------------------------
class VLLMPolicy:
    """Samples with vLLM's offline engine (`vllm.LLM`), same `generate` interface as `HFPolicy`.

    GPU only and untested on CPU CI (vLLM is not installed there): kept deliberately thin. Prompts go
    in as token ids; `seeds` gives every prompt its own seed, so n samples of one prompt differ and a
    resumed evaluation redraws the same samples. `lora` is a LoRA adapter directory served on top of
    `model_path` (the authors evaluate their policies this way, spec §6.3).
    """

    def __init__(self, model_path: str, tokenizer: str | None = None, dtype: str = "auto", lora: str | None = None,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9, max_lora_rank: int = 64,
                 **engine_kw: Any):
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError("the vLLM backend needs vllm on a GPU machine: pip install -e '.[gpu]'") from e
        from .models import resolve_model

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


# -- OpenAI-compatible servers ------------------------------------------------------------------
class ServerError(RuntimeError):
    pass


def post_json(url: str, payload: dict[str, Any], timeout: float = 60.0, retries: int = 3, backoff: float = 0.5,
              api_key: str | None = None) -> dict[str, Any]:
    """POST with a timeout and at most `retries` retries (exponential back-off) on errors and 5xx.

    A 4xx reply other than 408/429 is not retried: the request itself is wrong.
    """
    data = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last = ""
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")[:300]
            last = f"HTTP {e.code} from {url}: {body}"
            if 400 <= e.code < 500 and e.code not in (408, 429):
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as e:
            last = f"{type(e).__name__} from {url}: {getattr(e, 'reason', e)}"
        if attempt < retries:
            time.sleep(backoff * (2 ** attempt))
    raise ServerError(last)


def _server_model(base_url: str, timeout: float) -> str:
    req = urllib.request.Request(base_url.rstrip("/") + "/v1/models")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = json.loads(r.read().decode("utf-8"))
        return str(data["data"][0]["id"])
    except Exception as e:  # noqa: BLE001
        raise ServerError(f"cannot list models at {base_url}/v1/models: {e}") from None


def _top_logprobs(entry: Any) -> list[tuple[str, float]]:
    """One position's top-k as [(token, logprob)], most likely first, from either logprobs format."""
    if isinstance(entry, dict):
        if "top_logprobs" in entry and isinstance(entry["top_logprobs"], list):  # chat-style / llama.cpp
            pairs = [(c.get("token", ""), float(c["logprob"])) for c in entry["top_logprobs"]]
        else:  # legacy completions: {token: logprob}
            pairs = [(t, float(v)) for t, v in entry.items()]
    else:
        pairs = []
    return sorted(pairs, key=lambda x: -x[1])


def _positions(choice: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, float]]], list[int] | None]:
    lp = choice.get("logprobs") or {}
    if "content" in lp and isinstance(lp["content"], list):  # newer format
        toks = [c.get("token", "") for c in lp["content"]]
        tops = [_top_logprobs(c) for c in lp["content"]]
        return toks, tops, None
    toks = list(lp.get("tokens") or [])
    tops = [_top_logprobs(t) if t else [] for t in (lp.get("top_logprobs") or [])]
    return toks, tops, lp.get("text_offset")


class OpenAIReflectionScorer:
    """Scores traces with a reflection model behind an OpenAI-compatible completions server.

    The chat template is applied here, with the reflection model's tokenizer (`tokenizer`, a path;
    by default the served model name, which is usually the path vLLM was started with).
    """

    def __init__(self, base_url: str, tokenizer: str | None = None, model: str | None = None, timeout: float = 120.0,
                 retries: int = 3, max_context: int = 10240, concurrency: int = 8, top_k: int = 5,
                 api_key: str | None = None):
        from transformers import AutoTokenizer

        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.max_context = timeout, retries, max_context
        self.concurrency, self.top_k, self.api_key = concurrency, top_k, api_key
        # With a tokenizer given, the server is first contacted at the first request, so a server that is
        # down fails those traces (reported) instead of the whole run.
        self._model = model if (model or tokenizer) else _server_model(self.base_url, timeout)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or self._model)

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = _server_model(self.base_url, self.timeout)
        return self._model

    def _complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload = {"model": self.model, **payload}
        return post_json(f"{self.base_url}/v1/completions", payload, self.timeout, self.retries, api_key=self.api_key)

    def _score_one(self, problem: str, paragraphs: Sequence[str], mode: str) -> ScoreOutcome:
        t0 = time.perf_counter()
        n = len(paragraphs)
        if n == 0:
            return ScoreOutcome([], 0)
        try:
            prompt = build_prompt(self.tokenizer, problem, paragraphs, self.max_context)
            if mode == "generate":
                r = self._complete({"prompt": prompt.text, "max_tokens": 8 * prompt.n_shown + 8, "temperature": 0,
                                    "logprobs": self.top_k})
                choice = r["choices"][0]
                _, tops, _ = _positions(choice)
                p = read_p_result(tops, n)
                return ScoreOutcome(p, n, prompt.n_shown, choice.get("text"), seconds=time.perf_counter() - t0)
            sk = build_skeleton(self.tokenizer, prompt)
            think_id, result_id = label_token_ids(self.tokenizer)
            think_s, result_s = self.tokenizer.decode([think_id]), self.tokenizer.decode([result_id])
            r = self._complete({"prompt": sk.ids, "max_tokens": 1, "temperature": 0, "echo": True,
                                "logprobs": self.top_k})
            toks, tops, _ = _positions(r["choices"][0])
            if len(tops) < len(sk.ids):
                raise ServerError("the server did not echo prompt logprobs (needs `echo` with `logprobs`)")
            p = []
            for s in sk.slots:
                d = dict(tops[s])
                pt, pr = math.exp(d.get(think_s, -math.inf)), math.exp(d.get(result_s, -math.inf))
                p.append(pr / (pt + pr) if pt + pr > 0 else 0.0)
            return ScoreOutcome(p, n, prompt.n_shown, seconds=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - per trace, the run goes on
            return ScoreOutcome(None, n, error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)

    def score(self, problems: Sequence[str], paragraphs: Sequence[Sequence[str]], mode: str = "generate") -> list[ScoreOutcome]:
        if mode not in SCORING_MODES:
            raise ValueError(f"mode must be one of {SCORING_MODES}, got {mode!r}")
        with ThreadPoolExecutor(max_workers=self.concurrency) as ex:
            return list(ex.map(lambda a: self._score_one(a[0], a[1], mode), zip(problems, paragraphs)))


class OpenAIPolicy:
    """Continues token-id prefixes through an OpenAI-compatible completions server.

    The kept prefix is sent as token ids, so it stays exact; the new text comes back as text and is
    encoded here (servers do not return sampled ids through this API).
    """

    def __init__(self, base_url: str, tokenizer: str | None = None, model: str | None = None, timeout: float = 300.0,
                 retries: int = 3, concurrency: int = 8, api_key: str | None = None):
        from transformers import AutoTokenizer

        self.base_url = base_url.rstrip("/")
        self.model_name = model or _server_model(self.base_url, timeout)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or self.model_name)
        self.timeout, self.retries, self.concurrency, self.api_key = timeout, retries, concurrency, api_key

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, temperature: float = 0.6,
                 top_p: float = 1.0, top_k: int = 50, seed: int | None = None) -> list[Generation]:
        tok = self.tokenizer

        def one(p: Sequence[int]) -> Generation:
            payload = {"model": self.model_name, "prompt": list(p), "max_tokens": max_new_tokens,
                       "temperature": temperature, "top_p": top_p, "top_k": top_k}
            if seed is not None:
                payload["seed"] = seed
            r = post_json(f"{self.base_url}/v1/completions", payload, self.timeout, self.retries, api_key=self.api_key)
            ch = r["choices"][0]
            text = ch.get("text", "")
            ids = tok(text, add_special_tokens=False)["input_ids"]
            finished = ch.get("finish_reason") == "stop"
            if finished and tok.eos_token_id is not None:
                ids = ids + [tok.eos_token_id]
            return Generation(ids, text, finished)

        with ThreadPoolExecutor(max_workers=self.concurrency) as ex:
            return list(ex.map(one, prompts))


def reflection_scorer(model: str, tokenizer: str | None = None, **kw: Any):
    """A URL gives the server scorer, anything else an in-process model (`default` = embedded)."""
    if is_url(model):
        return OpenAIReflectionScorer(model, tokenizer=tokenizer, **{k: v for k, v in kw.items() if k in (
            "timeout", "retries", "max_context", "concurrency", "top_k", "api_key")})
    return HFReflectionScorer(model, **{k: v for k, v in kw.items() if k in ("device", "dtype", "batch_size", "max_context", "top_k")})


def policy_backend(model: str, tokenizer: str | None = None, **kw: Any):
    if is_url(model):
        return OpenAIPolicy(model, tokenizer=tokenizer, **{k: v for k, v in kw.items() if k in (
            "timeout", "retries", "concurrency", "api_key")})
    return HFPolicy(model, **{k: v for k, v in kw.items() if k in ("device", "dtype", "batch_size")})
