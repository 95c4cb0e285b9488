import json
from pathlib import Path

import pytest

from rearl.core.io import DataError
from rearl.reflector.labels import LabelConfig, label_file, sft_example
from rearl.reflector.prompt import PREFILL, build_prompt, build_skeleton
from rearl.reflector.train import (
    TrainConfig,
    encode_example,
    encode_examples,
    load_train_config,
    read_meta,
    select_examples,
    train_reflector,
)

ROOT = Path(__file__).resolve().parents[1]
PARAS = ["We compute 2 + 2 carefully.", "So the answer is $4$.", "Wait, let me check: 2 + 2 = 4. Yes."]


def _tokenizers(r1_tok):
    from transformers import AutoTokenizer

    from rearl.backends.embedded import resolve_model

    return [r1_tok, AutoTokenizer.from_pretrained(resolve_model("default"))]


# -- the token stream: training == inference ----------------------------------------------------------
def test_training_tokens_extend_the_inference_prompt(r1_tok):
    for tok in _tokenizers(r1_tok):
        ex = sft_example("What is 2 + 2?", PARAS, {1})
        enc = encode_example(tok, ex)
        ids, mask = enc["input_ids"], enc["completion_mask"]
        infer = build_prompt(tok, "What is 2 + 2?", PARAS)  # template + "[1]." exactly as the scorers send it
        assert ids[: len(infer.ids)] == infer.ids
        start = mask.index(1)
        assert set(mask[:start]) == {0} and set(mask[start:]) == {1}
        assert tok.decode(ids[start:]) == "[1]. Think\n[2]. Result\n[3]. Think" + tok.eos_token
        assert infer.text == tok.decode(ids[: len(infer.ids)])
        assert tok.decode(ids[len(infer.ids) - 4 : len(infer.ids)]).endswith(PREFILL)


def test_forward_scoring_skeleton_is_the_all_think_training_sequence(r1_tok):
    for tok in _tokenizers(r1_tok):
        enc = encode_example(tok, sft_example("What is 2 + 2?", PARAS, set()))
        sk = build_skeleton(tok, build_prompt(tok, "What is 2 + 2?", PARAS))
        assert enc["input_ids"][: len(sk.ids)] == sk.ids  # the slots read at inference are the trained tokens
        assert len(enc["input_ids"]) == len(sk.ids) + 1  # + EOS


def test_bad_examples_are_rejected(r1_tok):
    ex = sft_example("Q", PARAS, set())
    ex["completion"] = [{"role": "assistant", "content": "**[1].** Think"}]  # the authors' mismatched format
    with pytest.raises(DataError, match="prefill"):
        encode_example(r1_tok, ex)
    with pytest.raises(DataError):
        encode_example(r1_tok, {"prompt": "text", "completion": "[1]. Think"})


def test_over_long_examples_lose_trailing_paragraphs_like_inference(r1_tok):
    paras = [f"Paragraph {i}: " + "some words here " * 20 + "." for i in range(40)]
    ex = {**sft_example("Q", paras, {3, 35}), "problem": "Q", "_paragraphs": paras, "_result": [3, 35]}
    full = len(encode_example(r1_tok, ex)["input_ids"])
    out, counts = encode_examples(r1_tok, [ex], max_length=full // 2)
    assert counts == {"shortened": 1, "dropped_too_long": 0} and len(out[0]["input_ids"]) <= full // 2
    k = build_prompt(r1_tok, "Q", paras, full // 2).n_shown
    text = r1_tok.decode(out[0]["input_ids"])
    assert f"[{k}]. Think" in text and f"[{k + 1}]." not in text.split("Assistant")[-1] and "[4]. Result" in text
    no_paras = sft_example("Q", paras, set())
    assert encode_examples(r1_tok, [no_paras], max_length=50)[1]["dropped_too_long"] == 1


def test_example_selection(r1_tok):
    recs = [{"problem": "A", "result_paragraphs": [1], "examples": [sft_example("A", PARAS, {1}), sft_example("A", PARAS, set())]},
            {"problem": "B", "result_paragraphs": [], "examples": [sft_example("B", PARAS, set())]}]
    ex, st = select_examples(recs, TrainConfig(out="x", data=["y"]))
    assert st["examples"] == 2 and st["traces_used"] == 1  # the paper: traces without a Result are left out
    ex, st = select_examples(recs, TrainConfig(out="x", data=["y"], require_result=False, negatives_per_positive=1.0))
    assert st["examples"] == 2 and st["examples_with_result"] == 1


def test_recipes_load_and_unknown_keys_fail(tmp_path):
    for name in ("smollm2-cpu.yaml", "qwen2.5-7b-instruct.yaml"):
        cfg = load_train_config(str(ROOT / "recipes/reflector" / name), data=["labels.jsonl"], out="o")
        assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules) == (16, 32, 0.05, "all-linear")
    gpu = load_train_config(str(ROOT / "recipes/reflector/qwen2.5-7b-instruct.yaml"), data=["d"], out="o")
    assert gpu.learning_rate == 2e-5 and gpu.bf16 and gpu.gradient_checkpointing and gpu.seed == 1
    assert gpu.per_device_train_batch_size * gpu.gradient_accumulation_steps * 2 == 128 and gpu.max_length == 8192
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-4\nlora_rank: 8\n")
    with pytest.raises(DataError, match=r"bad.yaml: unknown option 'lora_rank'"):
        load_train_config(str(bad), data=["d"], out="o")
    assert load_train_config(str(ROOT / "recipes/reflector/smollm2-cpu.yaml"), data=["d"], out="o",
                             learning_rate=1e-3).learning_rate == 1e-3  # flags win over the recipe


# -- a real (tiny) training run ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_labels(tmp_path_factory, shared):
    d = tmp_path_factory.mktemp("labels")
    out = d / "labels.jsonl"
    label_file(LabelConfig(inputs=[str(shared / "data/traces/r1_distill_qwen14b_math500_sentences.jsonl")], out=str(out),
                           tokenizer=str(shared / "models/deepseek-r1-distill-qwen-tokenizer"), window_tokens=256,
                           limit=2), progress=False)
    return str(out)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def test_lora_train_merge_resume_and_load_in_detector(tmp_path, tiny_model_dir, tiny_labels, shared):
    from rearl.backends.hf import HFReflectionScorer
    from rearl.offline.detect import DetectConfig, detect_file

    out = tmp_path / "reflector"
    cfg = TrainConfig(data=[tiny_labels], out=str(out), base=tiny_model_dir, max_steps=2, save_steps=1,
                      learning_rate=1e-2, max_examples=6)
    meta = train_reflector(cfg, progress=False)
    assert meta["steps"] == 2 and meta["window_tokens"] == 256 and meta["lora"]["r"] == 16
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and read_meta(str(out))["format"] == "rearl-reflector-v1"
    merged, base = _weights(out), _weights(tiny_model_dir)
    assert not any("lora" in k for k in merged)  # a plain checkpoint, not an adapter
    assert set(merged) == set(base)
    changed = [k for k in merged if "proj" in k and not (merged[k] == base[k]).all()]
    assert changed, "the merged LoRA did not change any projection"

    # a finished model is not retrained; --force resumes from the last checkpoint
    assert train_reflector(cfg, progress=False)["skipped"]
    meta3 = train_reflector(TrainConfig(**{**cfg.__dict__, "max_steps": 3, "force": True}), progress=False)
    assert meta3["steps"] == 3 and meta3["resumed_from"].endswith("checkpoint-2")

    # the checkpoint loads in the detector's scorer and in `rearl detect --detector model`
    scorer = HFReflectionScorer(str(out))
    res = scorer.score(["What is x?"], [PARAS], "forward")[0]
    assert res.error is None and len(res.p_result) == 3 and all(0.0 <= p <= 1.0 for p in res.p_result)
    s = detect_file(DetectConfig(input=str(shared / "data/traces/r1_distill_qwen14b_math500_sentences.jsonl"),
                                 out=str(tmp_path / "cuts.jsonl"), tokenizer=str(shared / "models/deepseek-r1-distill-qwen-tokenizer"),
                                 detector="model", model=str(out), limit=1), progress=False)
    assert s["traces"] == 1 and s["failures"] == 0
    rec = json.loads((tmp_path / "cuts.jsonl").read_text().splitlines()[0])
    assert rec["labelled_paragraphs"] == rec["n_paragraphs"] and len(rec["p_result"]) == rec["n_paragraphs"]


def test_resume_refuses_other_data(tmp_path, tiny_model_dir, tiny_labels):
    out = tmp_path / "r"
    train_reflector(TrainConfig(data=[tiny_labels], out=str(out), base=tiny_model_dir, max_steps=1, save_steps=1,
                                max_examples=2), progress=False)
    with pytest.raises(DataError, match="other data"):
        train_reflector(TrainConfig(data=[tiny_labels], out=str(out), base=tiny_model_dir, max_steps=2, save_steps=1,
                                    max_examples=3, force=True), progress=False)


def test_full_finetune_and_eval_report(tmp_path, tiny_model_dir, tiny_labels):
    from rearl.reflector.evaluate import EvalConfig, evaluate_reflector

    out = tmp_path / "full"
    meta = train_reflector(TrainConfig(data=[tiny_labels], out=str(out), base=tiny_model_dir, lora=False, max_steps=1,
                                       save_steps=10, max_examples=2, learning_rate=1e-3), progress=False)
    assert meta["lora"] is None and meta["steps"] == 1
    rep = evaluate_reflector(EvalConfig(model=str(out), labels=tiny_labels, out=str(tmp_path / "rep")), progress=False)
    names = [r["method"] for r in rep["table"]]
    assert names[0] == "trained model, windows of 256 tokens" and names[1] == "trained model, whole trace"
    rows = {r["method"]: r for r in rep["table"]}
    teacher = rows["teacher labels (oracle)"]
    assert teacher["exact"] == 100.0 and teacher["precision"] == 100.0 and teacher["recall"] == 100.0
    assert rows["fixed ratio 0.5"]["precision"] is None and rows["fixed ratio 0.5"]["think_removed"] > 30
    assert "no Result (all Think: cut at the cap)" in rows and "first reflection after the first answer" in rows
    assert any(n.endswith("(the model's budget)") for n in names) or rows[names[0]]["think_removed"] == 50.0
    md = (tmp_path / "rep.md").read_text()
    assert "| teacher labels (oracle) | 2 | 100.0 | 100.0 | 0.0 | 100.0 | 100.0 |" in md
    assert json.loads((tmp_path / "rep.json").read_text())["traces"] == 2


def test_windowed_scorer_concatenates_windows_in_order(r1_tok):
    from rearl.reflector.prompt import ScoreOutcome
    from rearl.reflector.window import WindowedScorer

    class Fake:
        def __init__(self):
            self.calls = []

        def score(self, problems, paragraphs, mode="forward"):
            self.calls.append([list(p) for p in paragraphs])
            # P(Result) = 0.9 for paragraphs mentioning "answer"; the second window returns one label short
            return [ScoreOutcome([0.9 if "answer" in x else 0.1 for x in ps][: len(ps) - (k == 1)], len(ps), len(ps))
                    for k, ps in enumerate(paragraphs)]

    paras = [f"step {i} " + ("the answer is 3" if i in (2, 5) else "work work work") for i in range(6)]
    fake = Fake()
    counts = [len(r1_tok(p, add_special_tokens=False)["input_ids"]) for p in paras]
    res = WindowedScorer(fake, window_tokens=2 * max(counts), tokenizer=r1_tok).score(["Q"], [paras])[0]
    assert fake.calls[0] == [paras[0:2], paras[2:4], paras[4:6]]
    assert res.p_result == [0.1, 0.1, 0.9, 0.0, 0.1, 0.9] and res.n_shown == 5 and res.error is None
    # reflection_partial_labels: fail fires under windows too (the padded list used to hide the short window)
    failed = WindowedScorer(fake, window_tokens=2 * max(counts), tokenizer=r1_tok, partial_labels="fail").score(
        ["Q"], [paras])[0]
    assert failed.p_result is None and "labelled 1 of the 2 paragraphs of window [2, 4)" in failed.error


def test_window_follows_the_model_unless_given(tmp_path, r1_tok):
    from rearl.reflector.window import WindowedScorer, model_window, windowed

    (tmp_path / "rearl_reflector.json").write_text(json.dumps({"window_tokens": 512}))
    assert model_window(str(tmp_path), None) == 512  # as trained
    assert model_window(str(tmp_path), 0) is None  # the whole trace, on request
    assert model_window(str(tmp_path), 256) == 256
    assert model_window("default", None) is None and model_window("http://x:8000/v1", None) is None
    inner = object()
    w = windowed(inner, str(tmp_path), None, r1_tok)
    assert isinstance(w, WindowedScorer) and w.window_tokens == 512 and w.inner is inner
    assert windowed(inner, str(tmp_path), 0, r1_tok) is inner
    # a served model: the window is read from its tokenizer's directory when that holds the model's metadata
    w = windowed(inner, "http://x:8000", None, r1_tok, tokenizer=str(tmp_path))
    assert isinstance(w, WindowedScorer) and w.window_tokens == 512
    # ...and when it cannot be read, the whole trace is scored with a warning that says what to set
    said = []
    assert windowed(inner, "http://x:8000", None, r1_tok, tokenizer=None, warn=said.append) is inner
    assert len(said) == 1 and "reflection_window_tokens" in said[0]
    assert windowed(inner, "http://x:8000", 0, r1_tok, warn=said.append) is inner and len(said) == 1


def test_detect_and_trainer_take_a_window_option():
    from rearl.cli import build_parser
    from rearl.train.config import REARLConfig

    a = build_parser().parse_args(["detect", "--input", "x", "--tokenizer", "t", "--out", "o", "--detector", "model",
                                   "--model", "m", "--window-tokens", "300"])
    assert a.window_tokens == 300
    assert "reflection_window_tokens" in REARLConfig.__dataclass_fields__


@pytest.mark.slow
def test_smollm2_recipe_end_to_end_steps(tmp_path, tiny_labels, shared):
    """The CPU recipe on the embedded model: two optimizer steps, merged, scored by `rearl detect`."""
    from rearl.cli import main

    out = tmp_path / "smol"
    rc = main(["reflector", "train", "--config", str(ROOT / "recipes/reflector/smollm2-cpu.yaml"), "--data", tiny_labels,
               "--out", str(out), "--max-steps", "2", "--max-examples", "4", "--quiet"])
    assert rc == 0 and read_meta(str(out))["steps"] == 2 and read_meta(str(out))["base"] == "default"
    rc = main(["detect", "--input", str(shared / "data/traces/r1_distill_qwen14b_math500_sentences.jsonl"),
               "--tokenizer", str(shared / "models/deepseek-r1-distill-qwen-tokenizer"), "--detector", "model",
               "--model", str(out), "--limit", "1", "--out", str(tmp_path / "cuts.jsonl"), "--quiet"])
    rec = json.loads((tmp_path / "cuts.jsonl").read_text().splitlines()[0])
    assert rc == 0 and "error" not in rec and len(rec["p_result"]) == rec["n_paragraphs"]


def test_auroc():
    from rearl.reflector.evaluate import auroc

    assert auroc([(0.9, True), (0.1, False), (0.2, False)]) == 100.0
    assert auroc([(0.1, True), (0.9, False)]) == 0.0
    assert auroc([(0.0, True), (0.0, False), (0.0, False)]) == 50.0  # all tied: chance
    assert auroc([(0.4, True), (0.3, True), (0.35, False)]) == 50.0
    assert auroc([(0.5, False)]) is None
