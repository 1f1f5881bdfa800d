"""One-line wrapping and loading: the PEFT entry points, with headwise's methods registered."""

from __future__ import annotations

from typing import Any

import peft
from torch import nn

from .config import AdapterConfig
from .loading import check_adapter_folder, resolve_adapter_folder
from .transaction import unchanged_on_error

__all__ = ["check_adapter_name", "wrap", "get_adapter_model", "from_pretrained", "trainable_parameters"]


def check_adapter_name(adapter_name: Any) -> None:
    """An adapter name keys the adapter's parameters in a module dict: a non-empty string without '.'."""
    if not isinstance(adapter_name, str):
        raise TypeError(f"adapter_name must be a string (e.g. 'default'), got {type(adapter_name).__name__}")
    if not adapter_name or "." in adapter_name:
        raise ValueError(f"adapter_name must be a non-empty string without '.', got {adapter_name!r}")


def wrap(model: nn.Module, config: AdapterConfig, adapter_name: str = "default", **kwargs: Any) -> peft.PeftModel:
    """Attach a head-level adapter; returns a ``PeftModel`` (same as ``peft.get_peft_model``)."""
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"headwise.wrap takes a headwise adapter config (e.g. LofitConfig), got {type(config).__name__}")
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        from .sites import UnsupportedArchitectureError

        raise UnsupportedArchitectureError(
            f"headwise.wrap takes a transformers model (with a .config), got {type(model).__name__}"
        )
    if hasattr(model, "peft_config"):
        raise ValueError("this model already carries adapters: use model.add_adapter(name, config), or unload() it first")
    check_adapter_name(adapter_name)
    with unchanged_on_error(model):  # quiet, saves offline: headwise._peft_defaults (set up on registration)
        return peft.get_peft_model(model, config, adapter_name=adapter_name, **kwargs)


get_adapter_model = wrap


def from_pretrained(
    model: nn.Module, model_id: str, adapter_name: str = "default", is_trainable: bool = False,
    allow_nonfinite: bool = False, **kwargs: Any,
) -> peft.PeftModel:
    """Load a saved adapter (a local folder or a Hub repo id) onto ``model``.

    The folder is checked before anything is attached (``headwise.loading``: config, site, exactly the
    adapter's own keys, finite values), the shapes recorded in ``adapter_config.json`` on attach, and a
    failure at any point leaves ``model`` as it was.
    """
    if hasattr(model, "peft_config"):
        raise ValueError(
            "this model already carries adapters: load another one with model.load_adapter(folder, adapter_name=...), "
            "or unload() it first"
        )
    check_adapter_name(adapter_name)
    hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "token", "cache_dir") if k in kwargs}
    folder = resolve_adapter_folder(model_id, **hub_kwargs)
    config = check_adapter_folder(model, folder, allow_nonfinite=allow_nonfinite)
    with unchanged_on_error(model):
        return peft.PeftModel.from_pretrained(
            model, str(folder), adapter_name=adapter_name, is_trainable=is_trainable, config=config, **kwargs
        )


def trainable_parameters(model: nn.Module) -> dict[str, int]:
    """{'trainable': n, 'total': n}: what ``print_trainable_parameters`` prints, as numbers."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}
