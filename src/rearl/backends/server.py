"""Any OpenAI-compatible ``/v1/completions`` server with logprobs (``vllm serve``, llama.cpp's
``llama-server``) as a reflection scorer or a policy.

Requests have a timeout and bounded retries with back-off; a request that still fails is reported
per trace, never retried forever (the authors' released client loops forever on a non-200 reply,
see docs/method.md#where-we-differ-from-the-authors-code)."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from rearl.core.revision import Generation
from rearl.reflector.prompt import (
    SCORING_MODES,
    ScoreOutcome,
    build_prompt,
    build_skeleton,
    label_token_ids,
    read_p_result,
)


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
