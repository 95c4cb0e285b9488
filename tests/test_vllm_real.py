"""Against a real vLLM server on CPU (`make vllm` builds its venv, .venv-vllm).

One server for the module serves the embedded SmolLM2-135M-Instruct in float32 (start-up ~40 s,
paid once); the same checkpoint runs in-process with transformers for the comparisons. Without the
vLLM venv these tests are skipped, saying so. The server's cores: $REARL_VLLM_CPUS (default: every
core this process may use, so `taskset -c 1 pytest ...` keeps it on core 1).

Measured (docs/evaluation.md#vllm-on-cpu): P(Result) per paragraph, server vs in-process, max |diff|
2e-7 to 4e-7 in `forward` mode and 0 in `generate` mode; the tests allow 1e-4 (FWD_TOL, GEN_TOL).
Greedy token ids are identical.
"""

import json
import os
import time
import urllib.request

import pytest

from rearl.backends.vllm_server import VENV_ENV, VLLMServer, default_venv, venv_python

pytestmark = pytest.mark.slow

FWD_TOL = 1e-4  # P(Result), forward mode (prompt logprobs), absolute
GEN_TOL = 1e-4  # P(Result), generate mode (top-k of greedy steps), absolute

PARAS = ["We need 6 times 7.", "6 times 7 is 42, so the answer is 42.", "Wait, let me check again: 6 * 7 = 42.",
         "Yes, 42."]


@pytest.fixture(scope="module")
def model_dir():
    from rearl.backends.embedded import prepare_default_model

    return str(prepare_default_model())


@pytest.fixture(scope="module")
def vllm_url(model_dir, tmp_path_factory):
    if venv_python() is None:
        pytest.skip(f"no vLLM venv at {default_venv()} (run `make vllm`, or point ${VENV_ENV} at one)")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VLLMServer(model_dir, max_model_len=4096, kv_cache_gb=1, startup_timeout=600, log_path=log) as srv:
        print(f"vLLM up in {srv.startup_seconds:.1f} s on cores {srv.cpus}")
        yield srv.url


@pytest.fixture(scope="module")
def hf_scorer(model_dir):
    from rearl.backends.hf import HFReflectionScorer

    return HFReflectionScorer(model_dir, batch_size=1, max_context=4096)


@pytest.fixture(scope="module")
def traces(shared):
    """A few real R1 traces, cut to their first paragraphs (CPU time)."""
    from rearl.core.traces import load_traces

    out = []
    for t in load_traces(shared / "data" / "traces" / "r1_distill_qwen14b_math500_sentences.jsonl", limit=3):
        paras = [p for p in t.response.split("\n\n") if p.strip()][:8]
        out.append((t.problem, paras))
    return [("What is 6 times 7?", PARAS)] + out


def _server_scorer(url, model_dir):
    from rearl.backends.server import OpenAIReflectionScorer

    return OpenAIReflectionScorer(url, tokenizer=model_dir, retries=1, timeout=300, max_context=4096, concurrency=2)


def _max_diff(a, b):
    assert a is not None and b is not None
    assert len(a) == len(b), (a, b)
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def _compare_scoring(mode, vllm_url, model_dir, hf_scorer, traces):
    """P(Result) per paragraph from the server and in-process: (max |difference| per trace, labels read)."""
    problems, paras = [q for q, _ in traces], [p for _, p in traces]
    t0 = time.perf_counter()
    srv = _server_scorer(vllm_url, model_dir).score(problems, paras, mode)
    t1 = time.perf_counter()
    ref = hf_scorer.score(problems, paras, mode)
    print(f"{mode}: server {t1 - t0:.1f} s, in-process {time.perf_counter() - t1:.1f} s")
    diffs, labels = [], 0
    for s, r in zip(srv, ref):
        assert s.error is None, s.error
        assert r.error is None, r.error
        if mode == "forward":
            assert s.n_shown == r.n_shown
        diffs.append(_max_diff(s.p_result, r.p_result))
        labels += len(r.p_result)
    print(f"{mode}: {labels} labels over {sum(len(p) for p in paras)} paragraphs; "
          f"max |P(Result) server - in-process| = {max(diffs):.2e}")
    return diffs, labels


def test_forward_scoring_matches_in_process(vllm_url, model_dir, hf_scorer, traces):
    diffs, _ = _compare_scoring("forward", vllm_url, model_dir, hf_scorer, traces)
    assert max(diffs) <= FWD_TOL


def test_generate_scoring_matches_in_process(vllm_url, model_dir, hf_scorer, traces):
    diffs, labels = _compare_scoring("generate", vllm_url, model_dir, hf_scorer, traces)
    assert labels > 0, "the model emitted no label: the comparison would be empty"
    assert max(diffs) <= GEN_TOL


def test_eval_through_server_gets_ids_and_scores_like_in_process(vllm_url, model_dir, tmp_path, shared, pool):
    from rearl.core.io import read_jsonl
    from rearl.eval.run import EvalConfig, evaluate

    common = dict(benchmarks=["gsm8k"], limit=2, n=1, max_tokens=48, budgets=[24, 48], temperature=0.0,
                  data_dir=str(shared / "data" / "eval"))
    srv_cfg = EvalConfig(model=vllm_url, tokenizer=model_dir, out=str(tmp_path / "server"), concurrency=2, **common)
    hf_cfg = EvalConfig(model=model_dir, backend="hf", out=str(tmp_path / "hf"), batch_size=1, **common)
    s_srv = evaluate(srv_cfg, progress=False, pool=pool)
    s_hf = evaluate(hf_cfg, progress=False, pool=pool)
    srv = {r["key"]: r for _, r in read_jsonl(tmp_path / "server" / "samples.jsonl")}
    hf = {r["key"]: r for _, r in read_jsonl(tmp_path / "hf" / "samples.jsonl")}
    assert srv.keys() == hf.keys() and len(srv) == 2
    for k, r in srv.items():
        assert r["ids_exact"] is True
        assert r["ids"] == hf[k]["ids"], k  # greedy, fp32: the same tokens
        assert (r["finished"], r["stop_id"], r["text"]) == (hf[k]["finished"], hf[k]["stop_id"], hf[k]["text"])
    for b in ("24", "48"):
        assert s_srv["benchmarks"]["gsm8k"]["budgets"][b] == s_hf["benchmarks"]["gsm8k"]["budgets"][b]


def test_revision_continues_token_ids_exactly(vllm_url, model_dir, traces):
    from rearl.backends.hf import HFPolicy
    from rearl.backends.server import OpenAIPolicy
    from rearl.core.prompts import policy_prompt_ids
    from rearl.core.revision import revise

    pol = OpenAIPolicy(vllm_url, tokenizer=model_dir, retries=1, concurrency=2)
    tok = pol.tokenizer
    (q1, p1), (q2, p2) = traces[1:3]
    prompts = [policy_prompt_ids(tok, q1), policy_prompt_ids(tok, q2)]
    # kept prefixes (sample ids) that end in whitespace (the scaffold then drops its leading newlines) and mid-text
    prefixes = [tok("<think>\n" + "\n\n".join(p1[:2]) + "\n\n", add_special_tokens=False)["input_ids"],
                tok("<think>\n" + p2[0], add_special_tokens=False)["input_ids"]]
    got = revise(pol, tok, prompts, prefixes, max_new_tokens=24, temperature=0.0)
    want = revise(HFPolicy(model_dir, batch_size=1), tok, prompts, prefixes, max_new_tokens=24, temperature=0.0)
    for g, w, p, k in zip(got, want, prompts, prefixes):
        assert g.ids[: len(k)] == list(k)  # the kept prefix stays the sample's own ids
        assert g.ids == w.ids and g.sampled_mask == w.sampled_mask and g.completed == w.completed
    # what the server saw is exactly prompt + kept prefix + scaffold, and it hands back the sampled ids
    inputs = prompts[0] + list(prefixes[0]) + got[0].ids[len(prefixes[0]) : got[0].n_kept + got[0].n_scaffold]
    body = json.dumps({"model": pol.model_name, "prompt": inputs, "max_tokens": 4, "temperature": 0,
                       "return_token_ids": True}).encode()
    req = urllib.request.Request(vllm_url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        ch = json.loads(r.read())["choices"][0]
    assert ch["prompt_token_ids"] == inputs
    assert ch["token_ids"] == got[0].ids[got[0].n_kept + got[0].n_scaffold :][:4]


def test_server_start_failure_reports_log_tail(tmp_path):
    if venv_python() is None:
        pytest.skip(f"no vLLM venv at {default_venv()} (run `make vllm`)")
    from rearl.backends.vllm_server import VLLMServerError

    srv = VLLMServer(str(tmp_path / "no-such-model"), startup_timeout=120, log_path=tmp_path / "log.txt")
    with pytest.raises(VLLMServerError, match="exited with code") as e:
        srv.start()
    assert "no-such-model" in str(e.value) and len(str(e.value)) > 200
    assert srv.proc is None


def test_missing_venv_is_reported(tmp_path, monkeypatch):
    from rearl.backends.vllm_server import VLLMServerError

    monkeypatch.setenv(VENV_ENV, str(tmp_path / "nothing"))
    assert venv_python() is None
    with pytest.raises(VLLMServerError, match="make vllm"):
        VLLMServer(str(tmp_path)).command()


def test_cpu_binding_follows_env(monkeypatch):
    from rearl.backends.vllm_server import cpu_list

    monkeypatch.setenv("REARL_VLLM_CPUS", "1")
    assert cpu_list() == "1"
    monkeypatch.delenv("REARL_VLLM_CPUS")
    assert cpu_list() == ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
