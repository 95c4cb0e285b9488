"""rearl.backends.lean against transformers: greedy ids identical to `generate` (left padding, EOS,
grouped-query attention, q/k/v biases), the warpers identical to transformers' own, and sampled token
frequencies within a few standard errors of the exact warped distribution."""

import pytest
import torch

from rearl.backends.hf import cut_at_eos, left_pad
from rearl.backends.lean import LeanDecoder, sample_rows, supports, warp_logits

VOCAB = 97


def _model(kind: str, kv_heads: int, seed: int = 0):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=kv_heads, max_position_embeddings=512, tie_word_embeddings=True,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg = LlamaConfig(**common) if kind == "llama" else Qwen2Config(**common)
    m = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # peaked logits: a random model's near-uniform ones would make greedy a coin toss of rounding
        m.model.embed_tokens.weight.mul_(6)
    return m


def _prompts(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (int(k),), generator=g).tolist() for k in torch.randint(1, 30, (n,), generator=g)]


def _hf_greedy(model, prompts, new, eos):
    ids, mask = left_pad(prompts, 0)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=0,
                         eos_token_id=list(eos))
    return [cut_at_eos(r, set(eos)) for r in out[:, ids.shape[1]:].tolist()]


@pytest.mark.parametrize("kind,kv_heads", [("llama", 4), ("llama", 2), ("qwen2", 1)])
def test_greedy_ids_identical_to_generate(kind, kv_heads):
    model = _model(kind, kv_heads)
    prompts = _prompts(12)
    free = _hf_greedy(model, prompts, 40, [2])
    # EOS: tokens the model does write, so that rows stop at different steps and leave the batch
    counts = torch.bincount(torch.tensor([t for ids, _ in free for t in ids]), minlength=VOCAB)
    eos = [int(t) for t in counts.argsort(descending=True)[:2]]
    ref = _hf_greedy(model, prompts, 40, eos)
    got = LeanDecoder(model).generate(prompts, 40, eos, temperature=0)
    assert got == ref
    assert any(f for _, f in ref) and any(not f for _, f in ref)  # some rows stopped early, some ran to the limit


def test_warpers_match_transformers():
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(3)
    logits = torch.randn((6, VOCAB), generator=g) * 3
    for t, k, p, mp in [(0.7, 0, 1.0, 0.0), (0.6, 20, 1.0, 0.0), (1.0, 0, 0.9, 0.0), (0.8, 30, 0.8, 0.05)]:
        ref = logits.clone()
        for w in ([TemperatureLogitsWarper(t)] if t != 1.0 else []) + ([TopKLogitsWarper(k)] if k else []) + (
                [TopPLogitsWarper(p)] if p < 1 else []) + ([MinPLogitsWarper(mp)] if mp else []):
            ref = w(None, ref)
        got = warp_logits(logits.clone(), t, k, p, mp)
        assert torch.equal(torch.isinf(got), torch.isinf(ref)), (t, k, p, mp)
        assert torch.allclose(got[~torch.isinf(got)], ref[~torch.isinf(ref)])


def test_sample_rows_follows_the_distribution():
    g = torch.Generator().manual_seed(5)
    probs = torch.tensor([0.5, 0.0, 0.2, 0.25, 0.0, 0.05])
    n = 40000
    idx = sample_rows(probs.expand(n, -1).contiguous(), g)
    freq = torch.bincount(idx, minlength=6).double() / n
    assert freq[1] == 0 and freq[4] == 0  # never a token of probability 0
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * se + 1e-9).all(), (freq, probs)


def test_sampled_tokens_follow_the_warped_model_distribution():
    """First and second sampled tokens against the exact distribution of the model's own forward."""
    model = _model("llama", 2, seed=4)
    prompt = _prompts(1, seed=9)[0]
    n, temp, top_k, top_p = 6000, 0.7, 30, 0.95
    torch.manual_seed(11)
    out = LeanDecoder(model).generate([prompt] * n, 2, [], temperature=temp, top_k=top_k, top_p=top_p)
    first = torch.tensor([ids[0] for ids, _ in out])
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].float()
    p = warp_logits(logits[None], temp, top_k, top_p, 0.0).softmax(-1)[0].double()
    freq = torch.bincount(first, minlength=VOCAB).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-4).all()
    assert (freq[p == 0] == 0).all()
    # the second token, given the most frequent first one
    top = int(freq.argmax())
    second = torch.tensor([ids[1] for ids, _ in out if ids[0] == top])
    with torch.no_grad():
        logits2 = model(torch.tensor([prompt + [top]])).logits[0, -1].float()
    p2 = warp_logits(logits2[None], temp, top_k, top_p, 0.0).softmax(-1)[0].double()
    f2 = torch.bincount(second, minlength=VOCAB).double() / len(second)
    se2 = (p2 * (1 - p2) / len(second)).sqrt()
    assert len(second) > 500 and ((f2 - p2).abs() <= 5 * se2 + 1e-4).all()


def test_supports_and_refusals(tiny_model_dir):
    from transformers import AutoModelForCausalLM, GPT2Config

    assert supports(_model("llama", 4)) is None
    assert "model_type" in supports(AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2)))
    with pytest.raises(ValueError, match="cannot run"):
        LeanDecoder(torch.nn.Linear(2, 2))
    model = _model("llama", 4)
    assert LeanDecoder(model).generate([[5, 6]], 0, [2]) == [([], False)]
    with pytest.raises(ValueError, match="empty prompt"):
        LeanDecoder(model).generate([[]], 3, [2])


def test_lean_policy_matches_hf_policy(tiny_model_dir):
    """The eval interface: greedy generations identical to HFPolicy's on the tokenizer-backed tiny Qwen2."""
    from rearl.backends.hf import HFPolicy
    from rearl.backends.lean import LeanPolicy

    hf = HFPolicy(tiny_model_dir, batch_size=4)
    lean = LeanPolicy(model=hf.model, tokenizer=hf.tokenizer, batch_size=3)
    prompts = [hf.tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("What is 2+2?", "Hi", "Count to three.")]
    a = hf.generate(prompts, max_new_tokens=12, temperature=0.0)
    b = lean.generate(prompts, max_new_tokens=12, temperature=0.0)
    assert [(g.ids, g.finished, g.text) for g in a] == [(g.ids, g.finished, g.text) for g in b]


def test_trainer_picks_the_backend(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.core.prompts import math_messages
    from rearl.train.config import load_config
    from rearl.train.trainer import REARLTrainer

    def trainer(*over):
        _, _, cfg = load_config(None, [
            f"output_dir={tmp_path}", "use_cpu=true", "bf16=false", "per_device_train_batch_size=4", "num_generations=4",
            "max_completion_length=8", "report_to=none", "save_strategy=no", "reflection_model=oracle",
            "reflection_threshold=20", "gradient_checkpointing=false", *over])
        ds = Dataset.from_list([{"prompt": math_messages("1+1?"), "problem": "1+1?", "answer": "2"}] * 4)
        return REARLTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=cfg, train_dataset=ds,
                            processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))

    tr = trainer()  # auto, on CPU
    model = tr.accelerator.unwrap_model(tr.model)
    assert isinstance(tr._lean_decoder(model), LeanDecoder)
    samples = tr._sample_hf([[5, 6, 7]], 3, 5)
    assert len(samples) == 3 and all(0 < len(s.ids) <= 5 for s in samples)
    assert trainer("rollout_backend=hf")._lean_decoder(model) is None
    assert trainer("repetition_penalty=1.1")._lean_decoder(model) is None  # auto falls back
    with pytest.raises(ValueError, match="repetition_penalty"):
        t = trainer("rollout_backend=lean", "repetition_penalty=1.1")
        t._lean_decoder(t.accelerator.unwrap_model(t.model))
    with pytest.raises(ValueError, match="rollout_backend"):
        trainer("rollout_backend=fast")
