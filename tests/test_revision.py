import json

from rearl.backends.hf import HFPolicy
from rearl.core.revision import DEFAULT_SCAFFOLD, Generation, revise, scaffold_ids
from rearl.core.text import segment
from rearl.offline.detect import DetectConfig, detect_file
from rearl.offline.revise import ReviseConfig, revise_file

TRACE = (
    "First, 6 times 7. Let me compute it step by step to be careful about it.\n\n"
    "6 times 7 is 42. So the answer is 42.\n\n"
    "Wait, let me double-check: 7 times 6 is also 42. Yes, the total is 42.\n"
    "</think>\n\nThe answer is \\boxed{42}."
)


class FixedPolicy:
    def __init__(self, tok, ids, finished=True):
        self.tokenizer, self.ids, self.finished = tok, ids, finished
        self.seen = []

    def generate(self, prompts, **kw):
        self.seen = [list(p) for p in prompts]
        return [Generation(list(self.ids), "", self.finished) for _ in prompts]


def test_revision_is_token_exact(r1_tok):
    ids = r1_tok(TRACE, add_special_tokens=False)["input_ids"]
    seg = segment(r1_tok, ids=ids, min_tokens=5)
    assert len(seg.paragraphs) == 3
    prefix = seg.prefix_ids(1)
    answer = r1_tok("\\boxed{42}", add_special_tokens=False)["input_ids"] + [r1_tok.eos_token_id]
    pol = FixedPolicy(r1_tok, answer)
    prompt = [1, 2, 3]
    (rev,) = revise(pol, r1_tok, [prompt], [prefix])
    assert rev.ids[: len(prefix)] == ids[: len(prefix)]  # the kept prefix is the original's ids
    assert pol.seen[0][: len(prompt) + len(prefix)] == prompt + prefix
    scaf = rev.ids[len(prefix) : len(prefix) + rev.n_scaffold]
    assert r1_tok.decode(scaf).strip().startswith("</think>") and "**Final Answer:**" in r1_tok.decode(scaf)
    assert rev.sampled_mask == [1] * len(prefix) + [0] * rev.n_scaffold + [1] * len(answer)
    assert rev.completed and rev.text.rstrip().endswith("\\boxed{42}")
    (cut,) = revise(FixedPolicy(r1_tok, answer[:-1], finished=False), r1_tok, [prompt], [prefix])
    assert not cut.completed and cut.ids[-1] != r1_tok.eos_token_id  # no EOS forced onto a cut-off answer


def test_scaffold_no_double_newline(r1_tok):
    assert r1_tok.decode(scaffold_ids(r1_tok, "42.\n\n")) == DEFAULT_SCAFFOLD.lstrip("\n")
    assert r1_tok.decode(scaffold_ids(r1_tok, "42.")) == DEFAULT_SCAFFOLD


def test_detect_model_and_revise_end_to_end(tmp_path, tiny_model_dir, shared):
    rows = [{"id": k, "problem": "What is 6 times 7?", "answer": "42", "response": TRACE} for k in range(3)]
    inp = tmp_path / "t.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = str(shared / "models/deepseek-r1-distill-qwen-tokenizer")
    s = detect_file(DetectConfig(str(inp), str(tmp_path / "cuts.jsonl"), tok, detector="model", model=tiny_model_dir,
                                 mode="forward"), progress=False)
    assert s["traces"] == 3 and s["failures"] == 0
    rec = json.loads((tmp_path / "cuts.jsonl").read_text().splitlines()[0])
    assert len(rec["p_result"]) == rec["n_paragraphs"] and set(rec["cuts"]) == {"strong", "normal", "weak"}
    pol = HFPolicy(tiny_model_dir)
    res = revise_file(ReviseConfig(str(tmp_path / "cuts.jsonl"), tiny_model_dir, str(tmp_path / "rev.jsonl"),
                                   max_new_tokens=4), progress=False, policy=pol)
    names = [r["policy"] for r in res["table"]]
    assert names == ["original", "strong", "normal", "weak"]
    assert res["table"][0]["accuracy"] == 100.0
    recs = [json.loads(l) for l in (tmp_path / "rev.jsonl").read_text().splitlines()]
    assert len(recs) == 9 and all(r["generated_tokens"] <= 4 for r in recs)
    # a random policy does not finish in 4 tokens: incomplete revisions count as wrong
    assert all(r["correct"] is False for r in recs if not r["completed"])
    # resumable: a rerun does nothing new
    res2 = revise_file(ReviseConfig(str(tmp_path / "cuts.jsonl"), tiny_model_dir, str(tmp_path / "rev.jsonl"),
                                    max_new_tokens=4), progress=False, policy=pol)
    assert res2["table"] == res["table"]
    # another answer budget into the same --out is another run: refused (a mixed file would be summarised as one)
    import pytest

    with pytest.raises(ValueError, match="max_new_tokens: 4 there, 8 now"):
        revise_file(ReviseConfig(str(tmp_path / "cuts.jsonl"), tiny_model_dir, str(tmp_path / "rev.jsonl"),
                                 max_new_tokens=8), progress=False, policy=pol)
    with pytest.raises(ValueError, match="also an input"):
        revise_file(ReviseConfig(str(tmp_path / "cuts.jsonl"), tiny_model_dir, str(tmp_path / "cuts.jsonl")),
                    progress=False, policy=pol)
