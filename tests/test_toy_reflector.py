"""The toy-sized reflection model: its tokenizer keeps the toy LRM's ids and reads the reflection prompt, its
starting point is the toy's weights, and the standard scorer and label format work on it unchanged."""

import pytest

from rearl.reflector.prompt import (
    RESULT,
    THINK,
    build_prompt,
    build_skeleton,
    label_token_ids,
    parse_labels,
    target_text,
)
from rearl.testbed.tasks import make_tasks
from rearl.testbed.toy_model import train_tokenizer
from rearl.testbed.toy_reflector import init_reflector, quality_by_level, reflector_tokenizer
from rearl.testbed.traces import make_traces


@pytest.fixture(scope="module")
def world():
    tasks = make_tasks(40, (1, 2, 3, 4), seed=11)
    traces = make_traces(tasks, seed=2)
    return tasks, traces, train_tokenizer([t.text for t in traces])


def paragraphs(text):
    return [p for p in text.split("</think>")[0].split("\n\n") if p.strip()]


def test_tokenizer_keeps_the_toy_ids_and_reads_the_prompt(world):
    tasks, traces, toy = world
    tok = reflector_tokenizer(toy)
    assert len(tok) > len(toy)
    for t in traces:
        assert tok(t.text, add_special_tokens=False)["input_ids"] == toy(t.text, add_special_tokens=False)["input_ids"]
    paras = paragraphs(traces[0].text)
    p = build_prompt(tok, tasks[0].problem, paras)
    assert tok.unk_token_id not in p.ids  # every word of the instructions is known
    think, result = label_token_ids(tok)
    assert tok.convert_ids_to_tokens([think, result]) == [THINK, RESULT]
    # the scorer's skeleton is what training encodes (prompt + "[1]. Think\n[2]. Think ...")
    sk = build_skeleton(tok, p)
    completion = target_text([THINK] * len(paras))
    assert sk.ids == tok(p.text[: -len("[1].")] + completion, add_special_tokens=False)["input_ids"]
    # a generated reply decodes to label lines that parse
    labels = [THINK, RESULT] + [THINK] * (len(paras) - 2)
    reply = tok.decode(tok(target_text(labels), add_special_tokens=False)["input_ids"])
    assert parse_labels(reply, len(paras)) == labels


def test_init_keeps_the_toy_weights_and_scores(world, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rearl.backends.hf import HFReflectionScorer

    tasks, traces, toy = world
    toy_dir = tmp_path / "toy"
    cfg = LlamaConfig(vocab_size=len(toy), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=toy.eos_token_id, pad_token_id=toy.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(toy_dir)
    toy.save_pretrained(toy_dir)
    out = init_reflector(toy_dir, tmp_path / "init")
    old = AutoModelForCausalLM.from_pretrained(toy_dir).get_input_embeddings().weight
    new = AutoModelForCausalLM.from_pretrained(out).get_input_embeddings().weight
    assert new.shape[0] > old.shape[0] and torch.equal(new[: old.shape[0]], old)
    # the new rows are the old rows' mean, the same on every run (a story's reflector is reproducible)
    assert torch.allclose(new[old.shape[0]:], old.mean(0).expand(new.shape[0] - old.shape[0], -1))
    torch.manual_seed(123)  # whatever the global RNG holds
    again = AutoModelForCausalLM.from_pretrained(init_reflector(toy_dir, tmp_path / "init2")).get_input_embeddings().weight
    assert torch.equal(again, new)
    sc = HFReflectionScorer(str(out))
    paras = paragraphs(traces[0].text)
    res = sc.score([tasks[0].problem], [paras], "forward")[0]
    assert res.error is None and len(res.p_result) == len(paras) == res.n_shown
    assert all(0.0 <= p <= 1.0 for p in res.p_result)


def test_quality_by_level_counts_agreement_per_difficulty():
    report = {"per_trace": [
        {"key": "a", "teacher_cut": 3, "cuts": {"model": 3, "cap": 6}},
        {"key": "b", "teacher_cut": 4, "cuts": {"model": 5, "cap": 4}},
        {"key": "c", "teacher_cut": 2, "cuts": {"model": 2, "cap": None}},
    ]}
    q = quality_by_level(report, {"a": 1, "b": 3, "c": 4})
    assert q["model"]["easy"] == {"n": 1, "exact": 100.0, "within1": 100.0}
    assert q["model"]["hard"] == {"n": 2, "exact": 50.0, "within1": 100.0}
    assert q["cap"]["hard"] == {"n": 1, "exact": 100.0, "within1": 100.0} and q["cap"]["easy"]["exact"] == 0.0


def test_right_and_wrong_statements_are_counted_apart():
    from rearl.testbed.toy_reflector import right_and_wrong

    paras = ["Now column a : 5 + 4 = 9 .", "So the sum is c1 b3 a9 , and the answer is 1399 .",
             "This gives c1 b3 a0 , that is 1309 .\nBut 1309 does not match 1399 , so the first pass was wrong .\n"
             "The correct answer is 1309 .", "Reading it back in order , the answer is 1309 ."]
    report = {"per_trace": [{"key": "k"}], "details": {"m": [{"p_result": [0.1, 0.7, 0.9, 0.2]}]}}
    got = right_and_wrong(report, {"k": {"paragraphs": paras, "answer": "1309"}}, "m")
    assert got["wrong"] == {"paragraphs": 1, "called_result": 1, "rate": 100.0}
    assert got["right"] == {"paragraphs": 2, "called_result": 1, "rate": 50.0}
