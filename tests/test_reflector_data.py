import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rearl.core.io import DataError
from rearl.reflector.labels import (
    LabelConfig,
    check_prompt,
    coarse_prompt,
    group_paragraphs,
    judge_label,
    label_file,
    oracle_check,
    parse_check_reply,
    parse_coarse_reply,
    read_labels,
    sft_example,
    sft_examples,
    split_by_problem,
)
from rearl.reflector.prompt import PREFILL, parse_labels, user_message

GOOD = """[1]. Analysis: sets up the equation.
Label: Reasoning
[2]. Analysis: states x = 3, matching the gold answer.
Label: Right Result
[3]. Analysis: re-checks and gets 4.
Label: Wrong Result"""


# -- step-1 replies -------------------------------------------------------------------------------
def test_coarse_reply_good_and_markdown_variants():
    assert parse_coarse_reply(GOOD, 3).labels == ["Reasoning", "Right Result", "Wrong Result"]
    md = ("Sure, here they are.\n\n**[1].** Analysis: setup\n**Label:** Reasoning\n\n"
          "**[2].** Analysis: answer\n- Label: **Right Result.**\n\n[3]. Analysis: check\nlabel: wrong result")
    assert parse_coarse_reply(md, 3).labels == ["Reasoning", "Right Result", "Wrong Result"]
    # the no-gold variant's label
    assert parse_coarse_reply("[1]. Analysis: x\nLabel: Result", 1).labels == ["Result"]


def test_coarse_reply_malformed_is_dropped_with_a_reason():
    no_label = GOOD.replace("Label: Right Result", "It is right.")
    p = parse_coarse_reply(no_label, 3)
    assert p.labels is None and "[2]" in p.error and "Label" in p.error
    unknown = GOOD.replace("Label: Wrong Result", "Label: Final Answer")
    p = parse_coarse_reply(unknown, 3)
    assert p.labels is None and "unknown label" in p.error
    for junk in ("", "I cannot help with that.", None):
        assert parse_coarse_reply(junk, 2).labels is None


def test_coarse_reply_partial_is_dropped_not_shifted():
    cut_off = GOOD.split("[3].")[0]
    p = parse_coarse_reply(cut_off, 3)
    assert p.labels is None and "partial" in p.error and "[3]" in p.error
    # a skipped part in the middle must not move later labels up
    skipped = "\n".join(line for line in GOOD.splitlines() if "states x = 3" not in line and "Right Result" not in line)
    assert parse_coarse_reply(skipped, 3).labels is None


def test_coarse_reply_order_duplicates_and_range():
    shuffled = "[2]. Analysis: b\nLabel: Reasoning\n[1]. Analysis: a\nLabel: Right Result"
    assert parse_coarse_reply(shuffled, 2).labels == ["Right Result", "Reasoning"]
    dup = "[1]. A\nLabel: Reasoning\n[1]. A again\nLabel: Right Result\n[2]. B\nLabel: Reasoning\n[9]. x\nLabel: Nonsense"
    assert parse_coarse_reply(dup, 2).labels == ["Reasoning", "Reasoning"]


# -- step-2 replies -------------------------------------------------------------------------------
@pytest.mark.parametrize("reply,verdict", [
    ("Reasoning: the box holds 3/2, the gold is 1.5.\nAnswer: Yes", True),
    ("Reasoning: not yet.\nAnswer: No", False),
    ("Reasoning: ...\n**Answer:** yes.", True),
    ("Reasoning: an 'Answer: Yes' would need a number.\nAnswer: No", False),  # the last verdict counts
    ("Reasoning: it does.\nYes", None),
    ("", None),
])
def test_check_reply(reply, verdict):
    assert parse_check_reply(reply) is verdict


# -- prompts ----------------------------------------------------------------------------------------
def test_judge_prompts_with_and_without_gold():
    p = coarse_prompt("What is x?", ["a", "b"], "3")
    assert "**Gold Answer:** 3" in p and "**[1].** a\n\n**[2].** b" in p and "Right Result" in p
    assert "2 numbered parts" in p and "[2]. Analysis:" in p
    q = coarse_prompt("What is x?", ["a"], None)
    assert "Gold" not in q and "Label: <Reasoning | Result>" in q
    assert "**Gold Answer:** 3" in check_prompt("Q", "para", "3") and "Answer: <Yes or No>" in check_prompt("Q", "p", "3")
    assert "Gold" not in check_prompt("Q", "para", None)


# -- chunks / windows -----------------------------------------------------------------------------
def test_group_paragraphs_budget():
    assert group_paragraphs([100, 100, 100, 100], 250) == [(0, 2), (2, 4)]
    assert group_paragraphs([50, 300, 50], 100) == [(0, 1), (1, 2), (2, 3)]  # an oversized one stands alone
    assert group_paragraphs([], 100) == []
    counts = [37, 120, 64, 99, 128, 15, 80]
    g = group_paragraphs(counts, 200)
    assert [i for a, b in g for i in range(a, b)] == list(range(len(counts)))
    assert all(sum(counts[a:b]) <= 200 or b - a == 1 for a, b in g)
    with pytest.raises(ValueError):
        group_paragraphs([1], 0)


# -- the two-step judge on a fake model ---------------------------------------------------------------
class FakeJudge:
    """Labels parts containing 'ANSWER' as Right Result; says Yes to re-checks containing 'ANSWER'."""

    def __init__(self, break_chunk_with: str | None = None):
        self.prompts: list[str] = []
        self.break_chunk_with = break_chunk_with
        self.lock = threading.Lock()

    def ask(self, prompt: str, max_tokens: int) -> str:
        with self.lock:
            self.prompts.append(prompt)
        if "numbered parts" in prompt:
            if self.break_chunk_with and self.break_chunk_with in prompt:
                return "[1]. Analysis: hmm"  # partial, no label
            body = prompt.split("**Response:**")[1].split("Give every part")[0]
            parts = [x for x in body.split("**[")[1:]]
            return "\n".join(f"[{k}]. Analysis: x\nLabel: {'Right Result' if 'ANSWER' in p else 'Reasoning'}"
                             for k, p in enumerate(parts, 1))
        return "Reasoning: look.\nAnswer: " + ("Yes" if "ANSWER" in prompt.split("**Response:**")[1] else "No")


PARAS = [f"step {i} " + ("the ANSWER is 7." if i in (3, 8) else "more work.") for i in range(10)]


def test_judge_two_steps_chunks_restart_numbering_and_last_is_checked():
    j = FakeJudge()
    out = judge_label(j, "Q?", PARAS, [100] * 10, "7", chunk_tokens=400)
    assert out.chunks == 3 and out.malformed_chunks == 0
    coarse = [p for p in j.prompts if "numbered parts" in p]
    # numbering restarts at [1] in every chunk (requests may arrive in any order)
    assert sorted(p.split("**[1].** ")[1][:6] for p in coarse) == ["step 0", "step 4", "step 8"]
    assert all("**[5].**" not in p for p in coarse)
    assert out.candidates == [3, 8, 9]  # Right Result ones + the last paragraph
    assert out.result_paragraphs == [3, 8]  # the last one was re-checked and rejected
    assert out.coarse[3] == "Right Result" and out.coarse[0] == "Reasoning"


def test_judge_malformed_chunk_is_dropped_and_counted():
    j = FakeJudge(break_chunk_with="step 8")
    out = judge_label(j, "Q?", PARAS, [100] * 10, "7", chunk_tokens=400)
    assert out.malformed_chunks == 1 and out.notes == ["chunk [8, 10): part [1] has no 'Label:' line"]
    assert out.coarse[8] is None and out.result_paragraphs == [3]  # 8 lost with its chunk
    assert 9 in out.candidates


# -- SFT examples ---------------------------------------------------------------------------------
def test_sft_example_format_matches_inference_format():
    ex = sft_example("What is x?", ["a", "b", "c"], {1})
    assert ex["prompt"] == [{"role": "user", "content": user_message("What is x?", ["a", "b", "c"])}]
    comp = ex["completion"][0]["content"]
    assert comp == "[1]. Think\n[2]. Result\n[3]. Think" and comp.startswith(PREFILL) and "**" not in comp
    assert parse_labels(comp, 3) == ["Think", "Result", "Think"] and ex["n_result"] == 1


def test_windows_cover_every_paragraph_once_with_global_labels():
    paras = [f"p{i}" for i in range(9)]
    exs = sft_examples("Q", paras, [2, 7], n_tokens=[40] * 9, window_tokens=100)
    assert [e["first_paragraph"] for e in exs] == [0, 2, 4, 6, 8]
    assert sum(e["n_paragraphs"] for e in exs) == 9 and sum(e["n_result"] for e in exs) == 2
    w = exs[1]  # paragraphs 2, 3 shown as [1], [2]
    assert "**[1].** p2" in w["prompt"][0]["content"] and w["completion"][0]["content"] == "[1]. Result\n[2]. Think"
    assert len(sft_examples("Q", paras, [2], None, None)) == 1


# -- labelling real traces ----------------------------------------------------------------------------
def test_oracle_labels_on_real_traces(tmp_path, shared, r1_tok, pool):
    from rearl.core.detectors import answer_mentions, correct_mentions, oracle_detect
    from rearl.core.text import ThinkTags, segment
    from rearl.core.traces import load_traces

    src = str(shared / "data/traces/r1_distill_qwen14b_math500_sentences.jsonl")
    out = tmp_path / "labels.jsonl"
    cfg = LabelConfig(inputs=[src], out=str(out), tokenizer=str(shared / "models/deepseek-r1-distill-qwen-tokenizer"),
                      window_tokens=512, limit=3)
    s = label_file(cfg, progress=False)
    recs = read_labels(str(out))
    assert s["traces"] == 3 == len(recs)
    for r, t in zip(recs, load_traces(src, limit=3)):
        seg = segment(r1_tok, text=t.response, tags=ThinkTags.from_tokenizer(r1_tok))
        ok = correct_mentions(answer_mentions(seg.text, seg.split.think_start, seg.split.think_end), t.answer, pool)
        cands = oracle_detect(seg, t.answer, mentions_ok=ok).result_paragraphs
        assert r["candidates"] == cands and r["result_paragraphs"] == oracle_check(r["paragraphs"], cands, t.answer, pool)
        assert r["n_paragraphs"] == len(seg.paragraphs) and r["paragraphs"] == [p.text for p in seg.paragraphs]
        assert sum(e["n_result"] for e in r["examples"]) == len(r["result_paragraphs"])
    assert s["result_paragraphs"] > 0
    # resumable: a rerun labels nothing new and keeps one record per trace
    label_file(cfg, progress=False)
    assert len(out.read_text().splitlines()) == 3
    # ...but only a rerun of the same labelling: other settings into the same --out are refused, --force starts fresh
    from dataclasses import replace

    with pytest.raises(ValueError, match="results: 'every' there, 'first' now"):
        label_file(replace(cfg, results="first"), progress=False)
    assert label_file(replace(cfg, results="first", force=True), progress=False)["traces"] == 3


class _JudgeServer:
    """A real local /v1/chat/completions endpoint answering like FakeJudge (or failing on demand)."""

    def __init__(self, fail_when: str | None = None, malformed: bool = False):
        judge = FakeJudge()
        state = {"fail_when": fail_when, "malformed": malformed, "calls": 0}

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                state["calls"] += 1
                prompt = body["messages"][-1]["content"]
                if state["fail_when"] and state["fail_when"] in prompt:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"boom")
                    return
                text = "no idea" if state["malformed"] else judge.ask(prompt, body["max_tokens"])
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _two_traces(tmp_path):
    p = tmp_path / "traces.jsonl"
    recs = [{"id": "a", "problem": "What is 3+4?", "answer": "7",
             "response": "<think>\n" + "\n\n".join(PARAS) + "\n</think>\n\n\\boxed{7}"},
            {"id": "b", "problem": "What is 2+2?", "answer": "4",
             "response": "<think>\nLet me add. 2+2 is four, so ANSWER.\n\nDone checking this carefully.\n</think>\\boxed{4}"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(p)


def test_judge_over_http_failures_are_retried_on_rerun(tmp_path, shared):
    traces = _two_traces(tmp_path)
    tok = str(shared / "models/deepseek-r1-distill-qwen-tokenizer")
    out = tmp_path / "judge.jsonl"
    srv = _JudgeServer(fail_when="What is 2+2?")
    try:
        cfg = LabelConfig(inputs=[traces], out=str(out), tokenizer=tok, teacher="judge", judge_url=srv.url + "/v1",
                          judge_model="fake", retries=0, timeout=10, window_tokens=None)
        s = label_file(cfg, progress=False)
        assert s["traces"] == 1 and s["failed_traces"] == 1 and "HTTP 500" in s["failures"][0]
        srv.state["fail_when"] = None
        s = label_file(cfg, progress=False)
        assert s["traces"] == 2 and s["failed_traces"] == 0
    finally:
        srv.close()
    recs = {r["id"]: r for r in read_labels(str(out))}
    assert recs["a"]["teacher"] == "judge:fake" and recs["a"]["malformed_chunks"] == 0
    assert len(recs["a"]["result_paragraphs"]) >= 1
    assert recs["b"]["examples"][0]["completion"][0]["content"].startswith("[1].")


def test_judge_malformed_replies_never_crash(tmp_path, shared):
    traces = _two_traces(tmp_path)
    srv = _JudgeServer(malformed=True)
    try:
        cfg = LabelConfig(inputs=[traces], out=str(tmp_path / "m.jsonl"),
                          tokenizer=str(shared / "models/deepseek-r1-distill-qwen-tokenizer"), teacher="judge",
                          judge_url=srv.url, judge_model="fake", retries=0)
        s = label_file(cfg, progress=False)
    finally:
        srv.close()
    assert s["traces"] == 2 and s["malformed_chunks"] == s["chunks"] >= 2
    assert s["malformed_checks"] == 2 and s["result_paragraphs"] == 0  # only the last paragraphs were re-checked


def test_label_errors_name_the_source(tmp_path, shared):
    p = tmp_path / "nogold.jsonl"
    p.write_text(json.dumps({"id": "x", "problem": "Q", "response": "<think>a</think>"}) + "\n")
    cfg = LabelConfig(inputs=[str(p)], out=str(tmp_path / "o.jsonl"),
                      tokenizer=str(shared / "models/deepseek-r1-distill-qwen-tokenizer"))
    with pytest.raises(DataError, match=r"nogold.jsonl:1: no gold answer"):
        label_file(cfg, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": "k", "problem": "Q", "n_paragraphs": 3, "result_paragraphs": [5]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: result paragraph 5 outside 0..2"):
        read_labels(str(bad))


# -- problem-level split ----------------------------------------------------------------------------
def test_split_keeps_problems_together_and_is_seeded():
    recs = [{"key": f"k{i}", "problem": f"Problem {i % 7}"} for i in range(21)]
    recs.append({"key": "ws", "problem": "  problem   3 "})  # same problem up to case and spacing
    train, held = split_by_problem(recs, 0.3, seed=1)
    assert len(train) + len(held) == len(recs)
    norm = lambda r: " ".join(r["problem"].split()).lower()  # noqa: E731
    assert not {norm(r) for r in train} & {norm(r) for r in held}
    assert len({norm(r) for r in held}) == 2  # round(0.3 * 7)
    again = split_by_problem(recs, 0.3, seed=1)
    assert [r["key"] for r in again[1]] == [r["key"] for r in held]
    with pytest.raises(ValueError):
        split_by_problem([{"key": "a", "problem": "same"}, {"key": "b", "problem": "Same"}], 0.5)


def test_cli_label_and_split(tmp_path, shared):
    from rearl.cli import main

    labels = tmp_path / "labels.jsonl"
    rc = main(["reflector", "label", "--input", str(shared / "data/traces/r1_distill_qwen14b_math500_sentences.jsonl"),
               "--tokenizer", str(shared / "models/deepseek-r1-distill-qwen-tokenizer"), "--window-tokens", "512",
               "--limit", "4", "--out", str(labels), "--quiet"])
    assert rc == 0 and len(read_labels(str(labels))) == 4
    summary = json.loads((tmp_path / "labels.summary.json").read_text())
    assert summary["teacher"] == "oracle" and summary["window_tokens"] == 512 and summary["traces"] == 4
    rc = main(["reflector", "split", "--labels", str(labels), "--out", str(tmp_path / "split"), "--heldout", "0.25"])
    train, held = read_labels(str(tmp_path / "split/train.jsonl")), read_labels(str(tmp_path / "split/heldout.jsonl"))
    assert rc == 0 and (len(train), len(held)) == (3, 1)
    assert not {r["problem"] for r in train} & {r["problem"] for r in held}
    assert main(["reflector", "label", "--input", str(labels), "--tokenizer", "x", "--teacher", "judge",
                 "--out", str(tmp_path / "j.jsonl")]) == 2  # a judge needs --judge-url: a clean error, not a crash


def test_oracle_check_rereads_each_candidate_alone(pool):
    paras = ["Now column a : 5 + 4 = 9 .", "So the sum is c1 b3 a9 , and the answer is 1309 .",
             "This gives 1309 .\nBut 1309 does not match 1399 , so the first pass was wrong .\nThe correct answer is 1308 .",
             "Reading it back in order , the answer is 1309 .", "Hmm , 1309 is what I wrote , and \\boxed{1309} it is ."]
    # a right number on the way to a wrong conclusion is not a Result; a plain restatement is
    assert oracle_check(paras, [1, 2, 3, 4], "1309", pool) == [1, 3, 4]
    # a non-numeric "answer is ..." (real traces: "the answer should be all integers in one box") decides nothing
    assert oracle_check(["\\boxed{-2, 1} . So the answer should be all integers inside one box ."], [0], "1,-2", pool) == [0]


def test_first_result_only(tmp_path, pool):
    from rearl.testbed.tasks import make_tasks
    from rearl.testbed.traces import make_traces

    tasks = make_tasks(6, (1,), seed=3)
    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "problem": t.problem, "answer": t.answer, "response": tr.text}) + "\n"
                           for i, (t, tr) in enumerate(zip(tasks, make_traces(tasks, seed=1)))))
    every, first = tmp_path / "every.jsonl", tmp_path / "first.jsonl"
    from rearl.testbed.toy_model import train_tokenizer

    tok_dir = tmp_path / "tok"
    train_tokenizer([tr.text for tr in make_traces(tasks, seed=1)]).save_pretrained(tok_dir)
    label_file(LabelConfig(inputs=[str(src)], out=str(every), tokenizer=str(tok_dir)), progress=False)
    label_file(LabelConfig(inputs=[str(src)], out=str(first), tokenizer=str(tok_dir), results="first"), progress=False)
    e, f = read_labels(str(every)), read_labels(str(first))
    assert sum(len(r["result_paragraphs"]) for r in e) > len(e)  # easy traces restate their answer
    for a, b in zip(e, f):
        assert b["result_paragraphs"] == a["result_paragraphs"][:1] and b["results"] == "first"
