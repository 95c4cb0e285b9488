import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import R1_TOKENIZER

from rearl.backends.hf import HFPolicy
from rearl.core.io import DataError
from rearl.eval.benchmarks import load_benchmark
from rearl.eval.run import (
    EvalConfig,
    evaluate,
    plan,
    resolve_budgets,
    score_run,
    score_samples,
    summarize,
)


# -- metric arithmetic on hand-made samples ---------------------------------------------------------
def _sample(tok, key, pid, pieces, gold, finished=True, level=None, bench="gsm8k"):
    ids = []
    for p in pieces:
        ids += tok(p, add_special_tokens=False)["input_ids"]
    return {"key": key, "benchmark": bench, "id": pid, "k": int(key.rsplit(":", 1)[1]), "level": level, "gold": gold,
            "ids": ids, "n_tokens": len(ids), "finished": finished, "text": tok.decode(ids)}


def _n(tok, *pieces):
    return sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in pieces)


@pytest.fixture
def hand_run(tmp_path, r1_tok):
    tok = r1_tok
    a = ["<think>", "\nLet me compute.\nSo the ", "answer is 4.", "\nWait, let me check again.", "\n", "</think>",
         "\n\nThe final answer is \\boxed{4}."]
    b = ["<think>", "\nIt is 5. But maybe not.", "\n", "</think>", "\n\n\\boxed{5}"]
    c = ["<think>", "\n" + " ".join(["step"] * 200)]
    d = ["<think>", "\nx=", "4.", "\n", "</think>", "\n\\boxed{4}"]
    samples = [
        _sample(tok, "gsm8k:p1:0", "p1", a, "4", level=1),
        _sample(tok, "gsm8k:p1:1", "p1", b, "4", level=1),
        _sample(tok, "gsm8k:p2:0", "p2", c, "4", finished=False, level=2),
        _sample(tok, "gsm8k:p3:0", "p3", d, "4", level=2),
    ]
    small = _n(tok, *a[:5])  # cuts A right before its </think>
    assert all(len(s["ids"]) <= small for s in (samples[1], samples[3])) and len(samples[2]["ids"]) > small
    (tmp_path / "config.json").write_text(json.dumps({"tokenizer": str(R1_TOKENIZER), "max_tokens": 600,
                                                      "think_in_prompt": False}))
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return tmp_path, samples, small, {"a": a, "b": b, "c": c, "d": d}


def test_metric_arithmetic_on_hand_made_samples(hand_run, r1_tok, pool):
    d, samples, small, pieces = hand_run
    tok = r1_tok
    s = score_run(d, budgets=[small, 600], pool=pool)
    lens = [len(x["ids"]) for x in samples]
    full, cut = s["benchmarks"]["gsm8k"]["budgets"]["600"], s["benchmarks"]["gsm8k"]["budgets"][str(small)]
    assert full["n"] == 4 and s["benchmarks"]["gsm8k"]["n_problems"] == 3
    assert full["accuracy"] == pytest.approx(50.0)  # A and D right, B wrong, C unfinished
    assert cut["accuracy"] == pytest.approx(25.0)  # A loses its </think> at the small budget: wrong
    assert full["pass_at_n"] == pytest.approx(200 / 3) and cut["pass_at_n"] == pytest.approx(100 / 3)
    assert full["mean_tokens"] == pytest.approx(sum(lens) / 4)
    assert cut["mean_tokens"] == pytest.approx(sum(min(n, small) for n in lens) / 4)
    think = [_n(tok, *pieces["a"][1:4]), _n(tok, pieces["b"][1]), _n(tok, pieces["c"][1]), _n(tok, *pieces["d"][1:3])]
    refl = [1, 1, 0, 0]  # "Wait, let me check" is one chain; "But"; none; none
    assert full["mean_think_tokens"] == pytest.approx(sum(think) / 4)
    assert full["reflection_interval"] == pytest.approx(sum(t / max(1, r) for t, r in zip(think, refl)) / 4)
    assert full["reflection_interval_pooled"] == pytest.approx(sum(think) / 2)
    assert full["reflection_density"] == pytest.approx(sum(r / t for t, r in zip(think, refl)) / 4)
    # cut at the small budget, A keeps its thinking (the trailing newline is not thinking); for C
    # everything after <think> counts
    cut_think = [think[0], think[1], small - 1, think[3]]
    assert cut["mean_think_tokens"] == pytest.approx(sum(cut_think) / 4)
    # outcome efficiency: first token of the first correct mention ("answer is 4", "4." of x=4.) / tokens
    eff_a = (_n(tok, *pieces["a"][:2]) + 1) / lens[0]
    eff_d = (_n(tok, *pieces["d"][:2]) + 1) / lens[3]
    assert full["outcome_efficiency"] == pytest.approx((eff_a + eff_d) / 2)
    assert cut["outcome_efficiency"] == pytest.approx(eff_d)
    assert full["finished"] == pytest.approx(75.0) and cut["finished"] == pytest.approx(50.0)
    lv = full["by_level"]
    assert set(lv) == {"1", "2"} and lv["1"]["accuracy"] == 50.0 and lv["2"]["accuracy"] == 50.0
    assert lv["2"]["mean_tokens"] == pytest.approx((lens[2] + lens[3]) / 2)
    # per-sample scores are on disk, one per sample and budget
    rows = [json.loads(line) for line in (d / "scores.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [x["key"] for x in samples]
    assert [r["budgets"]["600"]["correct"] for r in rows] == [True, False, False, True]
    assert [r["budgets"]["600"]["reflections"] for r in rows] == refl
    # the budget cut is the decoded id prefix
    assert rows[2]["budgets"][str(small)]["tokens"] == small and not rows[2]["budgets"][str(small)]["finished"]
    assert "Budget 600 tokens" in (d / "summary.md").read_text()


def test_token_ratio_and_average(hand_run, r1_tok, pool):
    d, samples, small, _ = hand_run
    base = score_run(d, budgets=[small, 600], pool=pool)
    mean = base["benchmarks"]["gsm8k"]["budgets"]["600"]["mean_tokens"]
    ref = {"benchmarks": {"gsm8k": {"budgets": {"600": {"mean_tokens": 2 * mean}}}}}
    rows = [json.loads(line) for line in (d / "scores.jsonl").read_text().splitlines()]
    # scoring in chunks (3 + 1 samples here) gives the same rows
    assert score_samples(samples, r1_tok, [small, 600], pool=pool, chunk=3) == rows
    s = summarize(rows, [small, 600], reference=ref)
    assert s["benchmarks"]["gsm8k"]["budgets"]["600"]["token_ratio"] == pytest.approx(50.0)
    assert s["benchmarks"]["gsm8k"]["budgets"][str(small)]["token_ratio"] is None  # not in the reference
    assert s["average"]["600"]["token_ratio"] == pytest.approx(50.0)
    assert s["average"]["600"]["accuracy"] == pytest.approx(50.0) and s["average"]["600"]["n_benchmarks"] == 1


def test_think_in_prompt_makes_untagged_unfinished_wrong(tmp_path, r1_tok, pool):
    # A template that opens <think> in the prompt: completions carry only </think>
    ok = _sample(r1_tok, "gsm8k:p1:0", "p1", ["\nSo 4.", "</think>", "\n\\boxed{4}"], "4")
    unfinished = _sample(r1_tok, "gsm8k:p2:0", "p2", ["\nIt is \\boxed{4} maybe"], "4", finished=False)
    (tmp_path / "config.json").write_text(json.dumps({"tokenizer": str(R1_TOKENIZER), "max_tokens": 64,
                                                      "think_in_prompt": True}))
    (tmp_path / "samples.jsonl").write_text(json.dumps(ok) + "\n" + json.dumps(unfinished) + "\n")
    rows = score_run(tmp_path, budgets=[64], pool=pool)
    assert rows["benchmarks"]["gsm8k"]["budgets"]["64"]["accuracy"] == 50.0


def test_budgets_and_plan(shared):
    assert resolve_budgets(EvalConfig(max_tokens=16384)) == [8192, 16384]
    assert resolve_budgets(EvalConfig(max_tokens=256, budgets=[100])) == [100, 256]
    with pytest.raises(ValueError, match="outside"):
        resolve_budgets(EvalConfig(max_tokens=256, budgets=[8192]))
    jobs = plan(EvalConfig(benchmarks=["gsm8k", "aime24", "math500"], limit=2))
    assert [j.benchmark for j in jobs].count("aime24") == 16 and [j.benchmark for j in jobs].count("gsm8k") == 2
    assert len({j.key for j in jobs}) == len(jobs) and len({j.seed for j in jobs}) == len(jobs)
    lines = (shared / "data/eval/math500.jsonl").read_text().splitlines()[:2]
    assert [j.level for j in jobs if j.benchmark == "math500"] == [json.loads(line)["level"] for line in lines]
    assert plan(EvalConfig(benchmarks=["aime24"], limit=1, n=3))[2].key == "aime24:aime24-1:2"
    with pytest.raises(ValueError, match="unknown benchmark"):
        plan(EvalConfig(benchmarks=["nope"]))


def test_every_benchmark_loads_with_levels_where_present(shared):
    from rearl.eval.benchmarks import BENCHMARKS

    for name in BENCHMARKS:
        recs = list(load_benchmark(name, limit=3))
        assert len(recs) == 3 and all(r["problem"].strip() and r["answer"] for r in recs)
        assert all((r["level"] is not None) == (name == "math500") for r in recs)


def test_bad_benchmark_file_names_file_line_and_field(tmp_path):
    (tmp_path / "gsm8k_test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n{"answer": "#### 3"}\n')
    with pytest.raises(DataError, match=r"gsm8k_test.jsonl:2: field 'question'"):
        list(load_benchmark("gsm8k", tmp_path))
    (tmp_path / "gsm8k_test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": \n')
    with pytest.raises(DataError, match=r"gsm8k_test.jsonl:2: invalid JSON"):
        list(load_benchmark("gsm8k", tmp_path))


def test_jsonl_benchmark_file_is_named_after_its_stem_with_levels(tmp_path):
    f = tmp_path / "toy_eval.jsonl"
    f.write_text('{"id": "a", "problem": "1+1?", "answer": "2", "level": 1}\n'
                 '{"question": "2+2?", "final_answer": "\\\\boxed{4}", "level": 2}\n')
    recs = list(load_benchmark(str(f)))
    assert [(r["id"], r["problem"], r["answer"], r["level"]) for r in recs] == [
        ("toy_eval-a", "1+1?", "2", 1), ("toy_eval-2", "2+2?", "4", 2)]
    jobs = plan(EvalConfig(benchmarks=[str(f)], n="auto"))
    assert [j.key for j in jobs] == ["toy_eval:toy_eval-a:0", "toy_eval:toy_eval-2:0"]
    assert [j.level for j in jobs] == [1, 2]


def test_jsonl_benchmark_errors_name_file_and_line(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "x", "solution": "no gold"}\n')
    with pytest.raises(DataError, match=r"mine.jsonl:2: no gold answer"):
        list(load_benchmark(str(f)))
    f.write_text('{"answer": "2"}\n')
    with pytest.raises(DataError, match=r"mine.jsonl:1: no question field"):
        list(load_benchmark(str(f)))
    with pytest.raises(DataError, match="no such benchmark file"):
        list(load_benchmark(str(tmp_path / "absent.jsonl")))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    with pytest.raises(ValueError, match="both be called mine"):
        plan(EvalConfig(benchmarks=[str(f), str(tmp_path / "sub" / "mine.jsonl")]))
    with pytest.raises(ValueError, match="unknown benchmark"):
        plan(EvalConfig(benchmarks=["gsm9k"]))


# -- sampling, resume after a kill --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir):
    return HFPolicy(tiny_model_dir, batch_size=4)


class Flaky:
    """Wraps a policy; dies on call number `die_at` (a kill between two batches)."""

    def __init__(self, inner, die_at=None):
        self.inner, self.die_at, self.calls = inner, die_at, 0
        self.tokenizer = inner.tokenizer

    def generate(self, prompts, max_new_tokens=256, temperature=0.6, top_p=1.0, top_k=50, seed=None):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt("simulated kill")
        return self.inner.generate(prompts, max_new_tokens, temperature, top_p, top_k, seed)


def _cfg(out, **kw):
    base = dict(model="unused", out=str(out), benchmarks=["gsm8k", "aime24"], limit=1, max_tokens=8, budgets=[4],
                batch_size=4)
    base.update(kw)
    return EvalConfig(**base)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path, tiny_policy, pool):
    # gsm8k: 1 sample (1 batch); aime24: 1 problem x 8 (2 batches of 4)
    full = evaluate(_cfg(tmp_path / "full"), progress=False, policy=Flaky(tiny_policy), pool=pool)
    ref = {r["key"]: r for r in _lines(tmp_path / "full" / "samples.jsonl")}
    assert len(ref) == 9

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(_cfg(out), progress=False, policy=Flaky(tiny_policy, die_at=3), pool=pool)
    before = _lines(out / "samples.jsonl")
    assert len(before) == 1 + 4  # two batches made it to disk
    with open(out / "samples.jsonl", "a") as f:  # and a record torn mid-write
        f.write(json.dumps(ref["aime24:aime24-1:4"])[:50])
    p = Flaky(tiny_policy)
    s = evaluate(_cfg(out), progress=False, policy=p, pool=pool)
    assert p.calls == 1  # only the missing batch
    after = _lines(out / "samples.jsonl")
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys)) == 9 and set(keys) == set(ref)
    assert after[: len(before)] == before
    # fixed batches and seeds: the resumed run drew exactly what the uninterrupted one did
    for r in after:
        assert r["ids"] == ref[r["key"]]["ids"] and r["text"] == ref[r["key"]]["text"]
    assert s["benchmarks"] == full["benchmarks"]

    p = Flaky(tiny_policy)
    evaluate(_cfg(out), progress=False, policy=p, pool=pool)  # nothing left: no generation
    assert p.calls == 0 and len(_lines(out / "samples.jsonl")) == 9
    with pytest.raises(DataError, match="temperature"):
        evaluate(_cfg(out, temperature=0.9), progress=False, policy=p, pool=pool)


def test_sample_records_and_both_budgets(tmp_path, tiny_policy, pool):
    s = evaluate(_cfg(tmp_path, benchmarks=["gsm8k"], limit=3), progress=False, policy=tiny_policy, pool=pool)
    recs = _lines(tmp_path / "samples.jsonl")
    tok = tiny_policy.tokenizer
    for r in recs:
        assert 1 <= r["n_tokens"] == len(r["ids"]) <= 8
        assert r["text"] == tok.decode(r["ids"], skip_special_tokens=False)
        assert (r["stop_id"] is not None) == r["finished"]
        assert r["prompt_tokens"] > 10 and r["max_new_tokens"] == 8
    assert s["budgets"] == [4, 8]
    b4, b8 = (s["benchmarks"]["gsm8k"]["budgets"][k] for k in ("4", "8"))
    assert b8["mean_tokens"] == pytest.approx(sum(r["n_tokens"] for r in recs) / 3)
    assert b4["mean_tokens"] == pytest.approx(sum(min(4, r["n_tokens"]) for r in recs) / 3)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["think_in_prompt"] is False and cfg["top_p"] == 0.95 and cfg["temperature"] == 0.6


@pytest.mark.slow
def test_cli_eval_survives_sigkill(tmp_path, tiny_model_dir, shared):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rearl.cli", "eval", "--model", tiny_model_dir, "--benchmarks", "aime24", "--limit",
           "2", "--batch-size", "1", "--max-tokens", "6", "--out", str(out), "--quiet"]
    env = {**os.environ, "REARL_SHARED": str(shared)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = out / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = samples.read_text().splitlines(keepends=True)
    complete = [line for line in before if line.endswith("\n")]
    assert 3 <= len(complete) < 16
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = samples.read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys)) == 16
    assert [line + "\n" for line in lines[: len(complete)]] == complete
    assert "aime24" in r.stdout and "average" in r.stdout


# -- the server backend: one request per sample, each with its own seed ---------------------------------
class _Server(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *a):
        pass

    def _send(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send({"data": [{"id": "policy"}]})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(req)
        right = req["seed"] % 2 == 0
        self._send({"choices": [{"text": f"<think>\nhm\n</think>\n\\boxed{{{18 if right else 7}}}",
                                 "finish_reason": "stop"}]})


def test_server_backend_seeds_each_sample(tmp_path, shared, pool):
    _Server.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}"
        cfg = EvalConfig(model=url, tokenizer=str(R1_TOKENIZER), out=str(tmp_path), benchmarks=["gsm8k"], limit=1,
                         n=6, max_tokens=32, concurrency=3)
        s = evaluate(cfg, progress=False, pool=pool)
    finally:
        srv.shutdown()
    recs = _lines(tmp_path / "samples.jsonl")
    seeds = sorted(r["seed"] for r in recs)
    assert len(recs) == 6 and sorted(q["seed"] for q in _Server.seen) == seeds and len(set(seeds)) == 6
    assert all(q["top_p"] == 0.95 and q["temperature"] == 0.6 and q["top_k"] == -1 for q in _Server.seen)
    assert all(r["finished"] and not r["ids_exact"] for r in recs)
    expected = 100.0 * sum(r["seed"] % 2 == 0 for r in recs) / 6  # gsm8k-1's gold is 18
    assert s["benchmarks"]["gsm8k"]["budgets"]["32"]["accuracy"] == pytest.approx(expected)


def test_vllm_backend_import_guard():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        from rearl.backends.vllm import VLLMPolicy

        with pytest.raises(RuntimeError, match="vllm"):
            VLLMPolicy("default")
    else:
        pytest.skip("vllm is installed: the guard is not exercised")


class Seeded:
    """A vLLM-like policy (per-sample seeds); records what it was asked."""

    def __init__(self, tok):
        self.tokenizer, self.asked = tok, []

    def generate(self, prompts, max_new_tokens=256, temperature=0.6, top_p=1.0, top_k=50, seed=None, seeds=None):
        from rearl.core.revision import Generation

        self.asked.append((len(prompts), list(seeds), top_k))
        out = []
        for s in seeds:
            ids = self.tokenizer(f"</think> \\boxed{{{18 if s % 2 == 0 else 7}}}", add_special_tokens=False)["input_ids"]
            out.append(Generation(ids + [self.tokenizer.eos_token_id], "", True))
        return out


def test_per_sample_seeds_and_growing_n(tmp_path, r1_tok, pool):
    from rearl.eval.run import derived_seed

    p = Seeded(r1_tok)
    cfg = dict(model="unused", out=str(tmp_path), benchmarks=["gsm8k"], limit=1, max_tokens=32)
    evaluate(EvalConfig(n=3, **cfg), progress=False, policy=p, pool=pool)
    s = evaluate(EvalConfig(n=5, **cfg), progress=False, policy=p, pool=pool)  # more samples per problem
    keys = [f"gsm8k:gsm8k-1:{k}" for k in range(5)]
    seeds = [derived_seed(2, k) for k in keys]
    assert p.asked == [(3, seeds[:3], -1), (2, seeds[3:], -1)]  # only the new samples, each its own seed
    recs = _lines(tmp_path / "samples.jsonl")
    assert [r["key"] for r in recs] == keys and [r["seed"] for r in recs] == seeds
    assert all(r["finished"] and r["stop_id"] == r1_tok.eos_token_id for r in recs)
    b = s["benchmarks"]["gsm8k"]
    assert b["samples_per_problem"] == 5  # gsm8k-1's gold is 18
    assert b["budgets"]["32"]["accuracy"] == pytest.approx(100.0 * sum(x % 2 == 0 for x in seeds) / 5)
