"""Any OpenAI-compatible ``/v1/completions`` server with logprobs (``vllm serve``, llama.cpp's
``llama-server``) as a reflection scorer or a policy.

Requests have a timeout and bounded retries with back-off; a request that still fails is reported
per trace, never retried forever (the authors' released client loops forever on a non-200 reply,
see docs/method.md#where-we-differ-from-the-authors-code). When the server does not answer at all
(refused, reset, timed out after every retry), the traces of the same `score` call not yet sent fail
at once instead of each waiting out its own timeouts (docs/training.md#a-served-reflection-model)."""

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
    read_p_result,
    reply_budget,
)


# -- OpenAI-compatible servers ------------------------------------------------------------------
class ServerError(RuntimeError):
    pass


class ServerUnreachable(ServerError):
    """No reply at all after every retry (connection refused or reset, timeout): the server is down or hung."""


def post_json(url: str, payload: dict[str, Any], timeout: float = 60.0, retries: int = 3, backoff: float = 0.5,
              api_key: str | None = None) -> dict[str, Any]:
    """POST with a timeout and at most `retries` retries (exponential back-off) on errors and 5xx.

    A 4xx reply other than 408/429 is not retried: the request itself is wrong.
    """
    data = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last, silent = "", False
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")[:300]
            last, silent = f"HTTP {e.code} from {url}: {body}", False
            if 400 <= e.code < 500 and e.code not in (408, 429):
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as e:
            last = f"{type(e).__name__} from {url}: {getattr(e, 'reason', e)}"
            silent = not isinstance(e, ValueError)  # a reply that is not JSON is still a reply
        if attempt < retries:
            time.sleep(backoff * (2 ** attempt))
    raise (ServerUnreachable if silent else ServerError)(last)


def _server_model(base_url: str, timeout: float) -> str:
    req = urllib.request.Request(base_url.rstrip("/") + "/v1/models")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = json.loads(r.read().decode("utf-8"))
        return str(data["data"][0]["id"])
    except (urllib.error.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ServerError(f"cannot list models at {base_url}/v1/models: {e}") from None
    except Exception as e:  # noqa: BLE001 - refused, reset, timed out
        raise ServerUnreachable(f"cannot list models at {base_url}/v1/models: {e}") from None


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

    def _token_str(self, key: str) -> str:
        """A logprobs key as the token's text: vLLM's `token_id:N` (return_tokens_as_token_ids) is decoded here,
        with the same tokenizer the in-process scorer uses; other servers send the text itself."""
        if key.startswith("token_id:"):
            try:
                return self.tokenizer.decode([int(key[9:])])
            except ValueError:
                return key
        return key

    def _score_one(self, problem: str, paragraphs: Sequence[str], mode: str, down: list[str] | None = None) -> ScoreOutcome:
        """One trace's outcome. `down` is shared by the traces of one `score` call: the first trace that finds
        the server unreachable records why, and the traces that start after it fail without a request."""
        t0 = time.perf_counter()
        n = len(paragraphs)
        if n == 0:
            return ScoreOutcome([], 0)
        if down:
            return ScoreOutcome(None, n, error=f"not sent, the server did not answer an earlier trace: {down[0]}")
        try:
            prompt = build_prompt(self.tokenizer, problem, paragraphs, self.max_context)
            if mode == "generate":
                # Token ids, not text: a server tokenizing the text would add its own BOS to the templated prompt.
                r = self._complete({"prompt": list(prompt.ids), "max_tokens": reply_budget(prompt.n_shown),
                                    "temperature": 0, "logprobs": self.top_k, "return_tokens_as_token_ids": True})
                choice = r["choices"][0]
                _, tops, _ = _positions(choice)
                tops = [[(self._token_str(t), lp) for t, lp in top] for top in tops]
                p = read_p_result(tops, n)
                reply = choice.get("text")
                if choice.get("token_ids") is not None:
                    reply = self.tokenizer.decode([int(t) for t in choice["token_ids"]], skip_special_tokens=True)
                return ScoreOutcome(p, n, prompt.n_shown, reply, seconds=time.perf_counter() - t0)
            sk = build_skeleton(self.tokenizer, prompt)
            p = self._forward_prompt_logprobs(sk)
            if p is None:
                p = self._forward_echo(sk)
            return ScoreOutcome(p, n, prompt.n_shown, seconds=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - per trace, the run goes on
            if isinstance(e, ServerUnreachable) and down is not None:
                down.append(str(e))
            return ScoreOutcome(None, n, error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)

    def _forward_prompt_logprobs(self, sk: Any) -> list[float] | None:
        """Exact P(Result) per slot from vLLM's `prompt_logprobs` (keyed by token id); None if the server has none.

        The skeleton holds " Think" at every slot, so its logprob is always returned (the prompt token's own
        entry); " Result" comes from the top-k, and where it is not there, from one forced greedy step at
        that slot (`_forced_logprob`). The result is the full-softmax ratio the in-process scorer
        computes, not a top-k approximation.
        """
        r = self._complete({"prompt": sk.ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": self.top_k})
        pl = r["choices"][0].get("prompt_logprobs")
        if not isinstance(pl, list):
            return None
        if len(pl) < len(sk.ids):
            raise ServerError(f"the server returned {len(pl)} prompt logprobs for {len(sk.ids)} prompt tokens")
        t_key, r_key = str(sk.think_id), str(sk.result_id)
        lp_t, lp_r = [], []
        for s in sk.slots:
            entry = pl[s] or {}
            if t_key not in entry:
                raise ServerError(f"prompt logprobs at position {s} lack the prompt token {t_key}")
            lp_t.append(float(entry[t_key]["logprob"]))
            lp_r.append(float(entry[r_key]["logprob"]) if r_key in entry else None)
        for k in [k for k, v in enumerate(lp_r) if v is None]:
            lp_r[k] = self._forced_logprob(sk.ids[: sk.slots[k]], sk.result_id)
        out = []
        for a, b in zip(lp_t, lp_r):
            pt, pr = math.exp(a), math.exp(b)
            out.append(pr / (pt + pr) if pt + pr > 0 else 0.0)
        return out

    def _forced_logprob(self, prefix: list[int], token: int) -> float:
        """log P(token | prefix) from one greedy step with `token` forced by a logit bias: vLLM reports the
        sampled token's logprob from the raw logits (before the bias), and the prefix is in its prefix cache
        (a prompt_logprobs request would recompute the whole prompt)."""
        r = self._complete({"prompt": prefix, "max_tokens": 1, "temperature": 0, "logprobs": 1,
                            "logit_bias": {str(token): 100}, "return_tokens_as_token_ids": True})
        lp = r["choices"][0].get("logprobs") or {}
        toks, vals = lp.get("tokens") or [], lp.get("token_logprobs") or []
        if not toks or toks[0] != f"token_id:{token}" or vals[0] is None:
            raise ServerError(f"the server did not sample the forced token {token} (got {toks[:1]})")
        # Only asked for a token outside the top-k (k >= 1), so its raw probability is below 1/2: a logprob
        # near 0 means the server reported it after the bias (vLLM's --logprobs-mode processed_logprobs).
        if float(vals[0]) > -1e-3:
            raise ServerError("the server reports processed logprobs; rearl needs raw ones (vLLM's default)")
        return float(vals[0])

    def _forward_echo(self, sk: Any) -> list[float]:
        """P(Result) from `echo` + `logprobs` (top-k by token text; a label outside the top-k counts as 0)."""
        think_s, result_s = self.tokenizer.decode([sk.think_id]), self.tokenizer.decode([sk.result_id])
        r = self._complete({"prompt": sk.ids, "max_tokens": 1, "temperature": 0, "echo": True,
                            "logprobs": self.top_k})
        _, tops, _ = _positions(r["choices"][0])
        if len(tops) < len(sk.ids):
            raise ServerError("the server returned no prompt logprobs (needs vLLM's `prompt_logprobs`, or `echo` "
                              "with `logprobs`)")
        p = []
        for s in sk.slots:
            d = {self._token_str(t): lp for t, lp in tops[s]}
            pt, pr = math.exp(d.get(think_s, -math.inf)), math.exp(d.get(result_s, -math.inf))
            p.append(pr / (pt + pr) if pt + pr > 0 else 0.0)
        return p

    def score(self, problems: Sequence[str], paragraphs: Sequence[Sequence[str]], mode: str = "generate") -> list[ScoreOutcome]:
        if mode not in SCORING_MODES:
            raise ValueError(f"mode must be one of {SCORING_MODES}, got {mode!r}")
        down: list[str] = []
        with ThreadPoolExecutor(max_workers=self.concurrency) as ex:
            return list(ex.map(lambda a: self._score_one(a[0], a[1], mode, down), zip(problems, paragraphs)))


class OpenAIPolicy:
    """Continues token-id prefixes through an OpenAI-compatible completions server.

    The prefix is sent as token ids, so it stays exact. The sampled ids come back where the server
    returns them (vLLM: `return_token_ids`), so revisions and evaluation records are token-exact
    (`Generation.exact`); a server that returns only text (llama.cpp) gets its text re-encoded here,
    which may split tokens differently (`exact` False).
    """

    def __init__(self, base_url: str, tokenizer: str | None = None, model: str | None = None, timeout: float = 300.0,
                 retries: int = 3, concurrency: int = 8, api_key: str | None = None):
        from transformers import AutoTokenizer

        self.base_url = base_url.rstrip("/")
        self.model_name = model or _server_model(self.base_url, timeout)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or self.model_name)
        self.timeout, self.retries, self.concurrency, self.api_key = timeout, retries, concurrency, api_key

    def _eos(self) -> int | None:
        return self.tokenizer.eos_token_id

    def _generation(self, ch: dict[str, Any]) -> Generation:
        tok = self.tokenizer
        finished = ch.get("finish_reason") == "stop"
        if ch.get("token_ids") is not None:
            ids = [int(t) for t in ch["token_ids"]]
            # A finished sample ends with the token that stopped it (callers strip it). vLLM keeps it in
            # token_ids; stop_reason is None for EOS, the id for a stop token, a string for a stop string.
            why = ch.get("stop_reason")
            stop = why if isinstance(why, int) else self._eos() if why is None else None
            if finished and stop is not None and (not ids or ids[-1] != stop):
                ids.append(int(stop))
            return Generation(ids, tok.decode(ids, skip_special_tokens=False), finished, exact=True)
        text = ch.get("text", "")
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if finished and self._eos() is not None:
            ids = ids + [self._eos()]
        return Generation(ids, text, finished, exact=False)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, temperature: float = 0.6,
                 top_p: float = 1.0, top_k: int = 50, seed: int | None = None) -> list[Generation]:
        def one(p: Sequence[int]) -> Generation:
            payload = {"model": self.model_name, "prompt": [int(t) for t in p], "max_tokens": max_new_tokens,
                       "temperature": temperature, "top_p": top_p, "top_k": top_k, "return_token_ids": True}
            if seed is not None:
                payload["seed"] = seed
            r = post_json(f"{self.base_url}/v1/completions", payload, self.timeout, self.retries, api_key=self.api_key)
            return self._generation(r["choices"][0])

        with ThreadPoolExecutor(max_workers=self.concurrency) as ex:
            return list(ex.map(one, prompts))
