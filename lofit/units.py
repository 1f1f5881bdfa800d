"""Offsets measured in units of each head's output scale.

Adam moves every element of a parameter by about the learning rate per step, whatever its gradient's
size. Head outputs of one model differ in scale by 20x or more (SmolLM2-135M: RMS 0.03 in layer 0 to
0.8 in layer 29), so one learning rate on the raw offset v is far too large for small heads and far too
small for large ones: the small ones blow up first. Training u in ``v = rms_h * u`` gives every head the
same relative step; the function of the model (``z + v``) is unchanged.
"""

from __future__ import annotations

import torch

from headwise.statistics import head_output_rms

from .adapter import LofitLayer

__all__ = ["offset_units_from_data", "set_offset_units"]


def set_offset_units(model, units: torch.Tensor, adapter_name: str = "default") -> None:
    """Measure ``adapter_name``'s offsets in ``units`` (an (L, H) matrix, e.g. head output RMS) from now
    on; the offsets v themselves (and so the model's outputs) do not change."""
    holders = [m for m in model.modules() if isinstance(m, LofitLayer) and adapter_name in m.lofit_offset]
    if not holders:
        raise ValueError(f"the model has no LoFiT offsets named {adapter_name!r}; wrap it with LofitConfig(use_offset=True)")
    expected = (model.peft_config[adapter_name].num_layers, holders[0].num_heads)
    if not isinstance(units, torch.Tensor):
        raise TypeError(f"units must be a tensor of shape (layers, heads)={expected}, got {type(units).__name__}")
    if tuple(units.shape) != expected:
        raise ValueError(f"units has shape {tuple(units.shape)}; this model needs (layers, heads)={expected}")
    if units.dtype == torch.bool or units.is_complex() or not torch.isfinite(units.float()).all() or (units.float() <= 0).any():
        raise ValueError("units must be finite and > 0 (a head whose output is all zeros has no scale)")
    for holder in holders:
        index = holder.head_index[adapter_name].cpu()
        holder.set_offset_unit(adapter_name, units[holder.site.layer, index])


def offset_units_from_data(model, train_dataset, pad_token_id: int, batch_size: int = 16, max_examples: int = 256,
                           floor: float = 1e-6) -> torch.Tensor:
    """(L, H) head output RMS over (up to ``max_examples``) rows of ``train_dataset`` (input_ids rows)."""
    from headwise.experiments.data import PaddingCollator
    from headwise.experiments.training import check_training_rows
    from headwise.transaction import check_count

    check_count("batch_size", batch_size)
    check_count("max_examples", max_examples)
    check_training_rows(train_dataset, "train_dataset", ("input_ids",))
    collate = PaddingCollator(pad_token_id=pad_token_id)
    rows = [train_dataset[i] for i in range(min(len(train_dataset), max_examples))]
    batches = [collate(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    return head_output_rms(model, batches).clamp_min(floor)
