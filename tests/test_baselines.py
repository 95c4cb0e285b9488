import json

import pytest

from rearl.train.baselines import BaselineConfig, build_pairs, train_baseline

RESP = "<think>\nSix times seven. 6*7 = 42. So the answer is 42.\n\nWait, check: 42.\n</think>\n\n\\boxed{42}"


def write_revise_outputs(tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"id": f"t{k}", "problem": f"What is 6 times 7? ({k})", "answer": "42",
                                          "response": RESP}) + "\n" for k in range(3)))
    (tmp_path / "cuts.summary.json").write_text(json.dumps({"input": str(traces), "fields": {}}))
    (tmp_path / "rev.summary.json").write_text(json.dumps({"cuts": str(tmp_path / "cuts.jsonl"), "input": str(traces)}))
    recs = []
    for k in range(3):
        for pos, ok in (("normal", k != 2), ("strong", True)):
            recs.append({"key": f"t{k}:{pos}", "id": f"t{k}", "position": pos, "correct": ok, "completed": True,
                         "completion": "<think>\nSix times seven. 6*7 = 42. So the answer is 42.\n</think>\n\n"
                                       "**Final Answer:**\n\n\\boxed{42}"})
    (tmp_path / "rev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return tmp_path / "rev.jsonl"


def test_pairs_keep_correct_revisions_at_the_position(tmp_path, r1_tok):
    rev = write_revise_outputs(tmp_path)
    sft = build_pairs(BaselineConfig("sft", str(rev), str(tmp_path / "o")), r1_tok)
    assert len(sft) == 2  # t2's normal revision is wrong
    assert sft[0]["prompt"].endswith("<｜Assistant｜>") and "What is 6 times 7? (0)" in sft[0]["prompt"]
    assert "**Final Answer:**" in sft[0]["completion"]
    rpo = build_pairs(BaselineConfig("rpo", str(rev), str(tmp_path / "o"), position="strong", max_per_problem=1), r1_tok)
    assert len(rpo) == 3 and rpo[0]["rejected"] == RESP and rpo[0]["chosen"] != RESP


@pytest.mark.parametrize("method", ["sft", "rpo"])
def test_baseline_trains_and_saves_a_plain_checkpoint(method, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    rev = write_revise_outputs(tmp_path)
    out = tmp_path / method
    res = train_baseline(BaselineConfig(method, str(rev), str(out), base=tiny_model_dir, max_steps=1,
                                        per_device_train_batch_size=2, gradient_accumulation_steps=1, max_length=256))
    assert res["global_step"] == 1 and res["examples"] == 2
    assert any("loss" in h for h in res["log_history"])
    m = AutoModelForCausalLM.from_pretrained(out)  # merged: loads without peft
    assert not hasattr(m, "peft_config")
