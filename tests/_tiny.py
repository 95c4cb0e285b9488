"""A tiny random Qwen2 with the real R1-distill tokenizer, saved for the tests that load a model from disk."""

from __future__ import annotations


def tiny_qwen2_dir(directory, tok, seed: int = 0, **config) -> str:
    """Save a randomly initialised Qwen2 (tied embeddings, the tokenizer's BOS/EOS) with `tok` to `directory`;
    `config` sets the sizes (hidden_size, num_attention_heads, ...)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True, **config)
    model = AutoModelForCausalLM.from_config(cfg).to(torch.float32)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)
