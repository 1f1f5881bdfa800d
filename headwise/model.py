"""One-line wrapping and loading: the PEFT entry points, with headwise's methods registered."""

from __future__ import annotations

from typing import Any

import peft
from torch import nn

from .config import AdapterConfig

__all__ = ["wrap", "get_adapter_model", "from_pretrained", "trainable_parameters"]


def wrap(model: nn.Module, config: AdapterConfig, adapter_name: str = "default", **kwargs: Any) -> peft.PeftModel:
    """Attach a head-level adapter; returns a ``PeftModel`` (same as ``peft.get_peft_model``)."""
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"headwise.wrap takes a headwise adapter config (e.g. LofitConfig), got {type(config).__name__}")
    return peft.get_peft_model(model, config, adapter_name=adapter_name, **kwargs)


get_adapter_model = wrap


def from_pretrained(
    model: nn.Module, model_id: str, adapter_name: str = "default", is_trainable: bool = False, **kwargs: Any
) -> peft.PeftModel:
    """Load a saved adapter (a local folder or a Hub repo id) onto ``model``.

    The shapes recorded in ``adapter_config.json`` are checked against ``model`` before anything is
    attached, so a mismatch leaves ``model`` untouched.
    """
    return peft.PeftModel.from_pretrained(model, model_id, adapter_name=adapter_name, is_trainable=is_trainable, **kwargs)


def trainable_parameters(model: nn.Module) -> dict[str, int]:
    """{'trainable': n, 'total': n}: what ``print_trainable_parameters`` prints, as numbers."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}
