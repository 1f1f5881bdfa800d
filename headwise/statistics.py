"""Per-head activation statistics, read by hooks on the head sites with every adapter off."""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from tqdm.auto import tqdm

from .sites import find_head_sites

__all__ = ["head_output_rms"]


@torch.no_grad()
def head_output_rms(model, batches: Iterable[dict], site_template: str | None = None) -> torch.Tensor:
    """(L, H) root-mean-square of each head's output (the output projection's input) over the real
    tokens of ``batches`` (dicts of ``input_ids`` / ``attention_mask``), with every adapter off.

    It measures how large a head's output is, so that per-head edits can be sized relative to it."""
    sites = find_head_sites(model, site_template)
    num_heads, head_dim = sites[0].num_heads, sites[0].head_dim
    squares = torch.zeros(len(sites), num_heads, dtype=torch.float64)
    mask_of_call: list[torch.Tensor] = []

    def capture(layer):
        def hook(module, args):
            heads = args[0].unflatten(-1, (num_heads, head_dim)).double()  # (B, T, H, d)
            squares[layer] += (heads.pow(2).mean(-1) * mask_of_call[0][..., None]).sum((0, 1)).cpu()
        return hook

    handles = [site.output.register_forward_pre_hook(capture(site.layer), prepend=True) for site in sites]
    adapters_off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    device = next(model.parameters()).device
    was_training, tokens = model.training, 0
    model.eval()
    try:
        with adapters_off:
            for batch in tqdm(batches, desc="head output scale", leave=False):
                input_ids = batch["input_ids"].to(device)
                mask = batch.get("attention_mask")
                mask = torch.ones_like(input_ids) if mask is None else mask.to(device)
                mask_of_call[:] = [mask.double()]
                model(input_ids=input_ids, attention_mask=mask)
                tokens += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if tokens == 0:
        raise ValueError("head_output_rms got no tokens: pass at least one non-empty batch")
    return (squares / tokens).sqrt().float()
