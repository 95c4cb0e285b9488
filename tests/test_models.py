import pytest

from rearl.backends import embedded as models


@pytest.mark.slow
def test_prepare_default_model_and_chat_template():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.prepare_default_model()
    assert models.is_prepared(path)
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model, "hf_quantizer", None) is None
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    # a second call is a cache hit
    assert models.prepare_default_model() == path


def test_prepare_is_atomic(tmp_path, monkeypatch):
    """A crash mid-write leaves no checkpoint (and no temp dir) behind."""
    monkeypatch.setenv("REARL_CACHE", str(tmp_path))
    import transformers

    class Boom(RuntimeError):
        pass

    def fake_tok(*a, **k):
        raise Boom("killed mid-write")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)
    with pytest.raises(Boom):
        models.prepare_default_model()
    parent = tmp_path / "models"
    assert not models.is_prepared() and not (parent / models.DEFAULT_MODEL_NAME).exists()
    assert list(parent.iterdir()) == []


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("REARL_CACHE", str(tmp_path))
    assert models.default_model_dir() == tmp_path / "models" / models.DEFAULT_MODEL_NAME
