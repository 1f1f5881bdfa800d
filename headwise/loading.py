"""Checking a saved adapter before anything touches the model.

PEFT's loader attaches the adapter first and reads the weights after, with ``strict=False``: a missing
or truncated file leaves a half-built model, and a file that carries a base-model key (``o_proj.weight``)
overwrites that weight. ``check_adapter_folder`` reads the config and the safetensors file, and accepts
exactly the keys the adapter's own holders would save, all finite, before PEFT is called.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

__all__ = ["AdapterFileError", "check_adapter_folder", "read_adapter_config", "resolve_adapter_folder"]

logger = logging.getLogger(__name__)

CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"


class AdapterFileError(ValueError):
    """A saved adapter is missing, corrupt, or holds something it should not."""


def resolve_adapter_folder(model_id, **hub_kwargs) -> Path:
    """A local folder as it is; otherwise a Hub repo id, downloaded (or read from the cache)."""
    path = Path(model_id)
    if path.is_dir():
        return path
    if path.exists():
        raise AdapterFileError(f"{model_id} is a file; give the folder that save_pretrained() wrote")
    text = str(model_id)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not text:
        raise AdapterFileError(f"no adapter folder at {model_id!r}: give the folder that save_pretrained() wrote, or a Hub repo id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md"], **hub_kwargs))
    except Exception as error:  # noqa: BLE001 - any Hub failure becomes one clear message
        raise AdapterFileError(
            f"{model_id!r} is neither a local folder nor a Hub repo that could be read ({type(error).__name__}: {error})"
        ) from error


def read_adapter_config(folder: Path):
    """The headwise config in ``folder``, checked: valid JSON, a registered method, fields its class accepts."""
    from peft import PeftConfig

    path = folder / CONFIG_NAME
    if not path.is_file():
        raise AdapterFileError(f"{path} is missing: the folder must hold what save_pretrained() wrote")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterFileError(f"{path} is not valid JSON ({error}); save the adapter again") from error
    if not isinstance(raw, dict) or "peft_type" not in raw:
        raise AdapterFileError(f"{path} holds no 'peft_type': it is not an adapter config")
    from peft.utils import PeftType

    from .registry import UnknownMethodError, method_classes, registered_methods

    peft_type = raw["peft_type"]
    if not isinstance(peft_type, str) or peft_type in {t.value for t in PeftType}:
        raise AdapterFileError(
            f"{path} is a {peft_type!r} adapter; headwise loads {sorted(registered_methods())} and the methods of "
            "installed method packages (use peft for its own types)"
        )
    try:
        method_classes(peft_type)  # imports the method's package if it is not registered yet
    except UnknownMethodError as error:
        raise AdapterFileError(f"{path} is a {peft_type!r} adapter: {error}") from error
    except ImportError as error:
        raise AdapterFileError(f"{path} is a {peft_type!r} adapter, and importing its method's package failed: {error}") from error
    try:
        return PeftConfig.from_pretrained(str(folder))
    except (TypeError, ValueError, KeyError, IndexError) as error:
        raise AdapterFileError(f"{path} is not a valid {raw['peft_type']} config: {error}") from error


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        other = sorted(p.name for p in folder.glob("adapter_model.*"))
        hint = f" (found {other}: headwise loads safetensors only)" if other else ""
        raise AdapterFileError(f"{path} is missing{hint}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise AdapterFileError(f"{path} is truncated or corrupt ({error}); save the adapter again") from error


def check_adapter_folder(model, folder: Path, allow_nonfinite: bool = False):
    """Raise :class:`AdapterFileError` unless ``folder`` holds a loadable adapter for ``model``; returns its config.

    Checks: the config parses as a headwise method's config; its site (the hooked module) is the output
    projection the architecture table names (or, off the table, an attention module's output projection);
    the weights file holds exactly the keys the adapter's holders save, with finite values; the recorded
    ``model_type`` and base model match ``model`` (a mismatch only warns: the shapes are checked on attach)."""
    from .compat import name_or_path
    from .heads import group_by_layer
    from .registry import method_classes
    from .sites import ARCHITECTURES, find_head_sites

    config = read_adapter_config(folder)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if config.site_template is not None:
        table = ARCHITECTURES.get(model_type or "")
        if table is not None and config.site_template != table.output:
            raise AdapterFileError(
                f"{folder / CONFIG_NAME} puts the adapter on {config.site_template!r}, but the heads of a {model_type} "
                f"model enter {table.output!r}; refusing to edit another module. Remove 'site_template' from the config."
            )
    sites = find_head_sites(base, config.site_template)
    if config.site_template is not None:
        _check_output_projection(sites[0])
    config.check_shape(model_type, len(sites), sites[0].num_heads, sites[0].head_dim)
    if config.model_type not in (None, model_type):
        logger.warning("adapter was saved for model_type %r, loading onto %r", config.model_type, model_type)
    recorded, actual = config.base_model_name_or_path, name_or_path(getattr(base, "config", None))
    if recorded and actual and recorded != actual:
        logger.warning("adapter was saved for base model %r, loading onto %r", recorded, actual)

    tuner_cls = method_classes(config.peft_type)[1]
    holder = "headwise_" + tuner_cls.prefix.rstrip("_")
    layers = group_by_layer(config.resolve_heads(len(sites), sites[0].num_heads))
    prefix = "base_model.model."
    expected: dict[str, bool] = {}  # key -> required
    for site in sites:
        if site.layer in layers:
            for name in saved_tensor_names(tuner_cls.tuner_layer_cls, site, layers[site.layer], config):
                expected[f"{prefix}{site.attention_name}.{holder}.{name}"] = True
    weights = _read_weights(folder)
    unknown = sorted(set(weights) - set(expected))
    if unknown:
        raise AdapterFileError(
            f"{folder / WEIGHTS_NAME} holds {unknown[0]!r}, which is no weight of this {config.peft_type.value} adapter "
            f"({len(unknown)} such key(s)); an adapter file may only hold its own holders' weights"
        )
    missing = sorted(key for key, needed in expected.items() if needed and key not in weights)
    if missing:
        raise AdapterFileError(f"{folder / WEIGHTS_NAME} lacks {missing[0]!r} ({len(missing)} missing key(s)); save the adapter again")
    if not allow_nonfinite:
        for key, tensor in weights.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise AdapterFileError(
                    f"{folder / WEIGHTS_NAME}: {key!r} holds NaN or inf; pass allow_nonfinite=True to load it anyway"
                )
    return config


def saved_tensor_names(layer_cls, site, heads: list[int], config) -> set[str]:
    """The tensors a saved adapter holds for one layer, read off the holder's own state: a detached probe
    holder is built for the config and its state_dict (parameters and persistent buffers) listed."""
    probe = layer_cls(site)
    probe.update_layer("__probe__", heads, config)
    suffix = ".__probe__"
    return {key[: -len(suffix)] for key in probe.state_dict() if key.endswith(suffix)}


def _check_output_projection(site) -> None:
    from .sites import _input_features

    attention = type(site.attention).__name__.lower()
    parent = site.attention_name.rpartition(".")[2].lower()
    if "attn" not in attention and "attention" not in attention and "attn" not in parent and "attention" not in parent:
        raise AdapterFileError(f"the config's site {site.output_name!r} is not under an attention module ({type(site.attention).__name__})")
    width = _input_features(site.output)
    if width != site.num_heads * site.head_dim:
        raise AdapterFileError(f"the config's site {site.output_name!r} does not take the {site.num_heads} head outputs")
