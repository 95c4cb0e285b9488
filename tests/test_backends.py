import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from rearl.backends.hf import HFPolicy, HFReflectionScorer
from rearl.backends.server import OpenAIReflectionScorer, ServerError, ServerUnreachable, post_json
from rearl.reflector.prompt import build_prompt, build_skeleton

PARAS = ["We set up the equation carefully.", "Then x = 3.", "So the answer is 3."]


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return HFReflectionScorer(tiny_model_dir, batch_size=2)


def test_forward_matches_full_softmax(scorer):
    out = scorer.score(["What is x?"], [PARAS], "forward")[0]
    assert out.error is None and len(out.p_result) == 3 and out.n_shown == 3
    tok = scorer.tokenizer
    sk = build_skeleton(tok, build_prompt(tok, "What is x?", PARAS, scorer.max_context))
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([sk.ids])).logits[0]
    probs = torch.softmax(logits.float(), -1)
    for s, p in zip(sk.slots, out.p_result):
        pt, pr = probs[s - 1, sk.think_id], probs[s - 1, sk.result_id]
        assert p == pytest.approx(float(pr / (pt + pr)), rel=1e-4)


def test_generate_mode_batches_and_reports(scorer):
    outs = scorer.score(["Q1", "Q2", "Q3"], [PARAS, PARAS[:2], []], "generate")
    assert [o.n_paragraphs for o in outs] == [3, 2, 0]
    for o in outs[:2]:
        assert o.error is None and o.reply is not None
        assert len(o.p_result) <= o.n_paragraphs  # a random model rarely emits label tokens
    assert outs[2].p_result == []


def test_hf_policy_generates_and_flags_eos(tiny_model_dir):
    pol = HFPolicy(tiny_model_dir)
    gens = pol.generate([[1, 2, 3], [4, 5]], max_new_tokens=5, temperature=0.6, seed=0)
    assert len(gens) == 2
    for g in gens:
        assert 1 <= len(g.ids) <= 5
        assert g.finished == (g.ids[-1] == pol.tokenizer.eos_token_id)


# -- an OpenAI-compatible endpoint for failure injection (the protocol; no model behind it) ---------
class _Handler(BaseHTTPRequestHandler):
    script: list = []
    calls = 0

    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {"data": [{"id": "reflector"}]})

    def do_POST(self):
        type(self).calls += 1
        n = int(self.headers["Content-Length"])
        req = json.loads(self.rfile.read(n))
        action = self.script.pop(0) if self.script else "ok"
        if action == "500":
            return self._send(500, {"error": "boom"})
        if action == "400":
            return self._send(400, {"error": "bad request"})
        if action == "hang":
            time.sleep(3)
            return self._send(200, {})
        # a well-formed legacy-completions reply labelling every part Result
        k = req["max_tokens"]
        tops = []
        toks = []
        for i in range(min(k, 3)):
            toks += [" Result", "\n"]
            tops += [{" Result": -0.1, " Think": -2.4}, {"\n": -0.01}]
        self._send(200, {"choices": [{"text": "".join(toks), "logprobs": {"tokens": toks, "top_logprobs": tops}}]})


@pytest.fixture()
def server(r1_tok, tmp_path):
    r1_tok.save_pretrained(tmp_path / "tok")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _Handler.script, _Handler.calls = [], 0
    yield f"http://127.0.0.1:{srv.server_address[1]}", str(tmp_path / "tok")
    srv.shutdown()


def test_server_scorer_reads_logprobs(server):
    url, tok = server
    sc = OpenAIReflectionScorer(url, tokenizer=tok, retries=0)
    assert sc.model == "reflector"
    o = sc.score(["Q"], [PARAS], "generate")[0]
    assert o.error is None and o.p_result == pytest.approx([0.9089] * 3, abs=1e-3)


def test_server_retries_then_succeeds(server):
    url, tok = server
    _Handler.script = ["500", "500"]
    sc = OpenAIReflectionScorer(url, tokenizer=tok, retries=3)
    o = sc.score(["Q"], [PARAS], "generate")[0]
    assert o.error is None and _Handler.calls == 3


def test_server_failure_is_reported_per_trace_and_bounded(server):
    url, tok = server
    _Handler.script = ["500"] * 10
    sc = OpenAIReflectionScorer(url, tokenizer=tok, retries=2)
    t0 = time.monotonic()
    outs = sc.score(["Q", "Q2"], [PARAS, PARAS], "generate")
    assert time.monotonic() - t0 < 10
    assert sum(o.error is not None for o in outs) >= 1
    assert all(o.p_result is None for o in outs if o.error)
    _Handler.script = ["400"]
    with pytest.raises(ServerError, match="HTTP 400"):
        post_json(url + "/v1/completions", {}, retries=5)
    assert _Handler.calls <= 10 + 1  # 4xx is not retried


def test_server_timeout(server):
    url, tok = server
    _Handler.script = ["hang"]
    t0 = time.monotonic()
    with pytest.raises(ServerError):
        post_json(url + "/v1/completions", {"max_tokens": 1}, timeout=0.5, retries=0)
    assert time.monotonic() - t0 < 2.5


def test_unreachable_server_fails_fast():
    t0 = time.monotonic()
    with pytest.raises(ServerError):
        post_json("http://127.0.0.1:9/v1/completions", {}, timeout=1, retries=1, backoff=0.1)
    assert time.monotonic() - t0 < 5


def test_unanswered_server_fails_the_rest_of_the_batch_at_once(server):
    """A hung server costs one trace's timeouts per `score` call, not one per trace (the trainer's step waits on it)."""
    url, tok = server
    _Handler.script = ["hang"] * 10
    sc = OpenAIReflectionScorer(url, tokenizer=tok, model="reflector", timeout=0.5, retries=1, concurrency=1)
    t0 = time.monotonic()
    outs = sc.score(["Q1", "Q2", "Q3"], [PARAS] * 3, "generate")
    assert time.monotonic() - t0 < 2.5  # 2 tries x 0.5 s + 0.5 s back-off for the first trace only
    assert _Handler.calls == 2
    assert outs[0].error.startswith("ServerUnreachable") and "timed out" in outs[0].error
    assert all(o.p_result is None and o.error.startswith("not sent") for o in outs[1:])
    with pytest.raises(ServerUnreachable):
        post_json("http://127.0.0.1:9/v1/completions", {}, timeout=1, retries=0)
    _Handler.script = ["500"] * 2  # an error reply is an answer: each trace is still tried
    outs = sc.score(["Q1", "Q2"], [PARAS] * 2, "generate")
    assert outs[0].error and "HTTP 500" in outs[0].error and outs[1].error is None
