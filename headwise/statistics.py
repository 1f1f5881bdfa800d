"""Per-head activation statistics, read by hooks on the head sites with every adapter off."""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from .sites import find_head_sites
from .progress import progress

__all__ = ["capturing_head_inputs", "head_output_rms"]


@contextlib.contextmanager
def capturing_head_inputs(model, capture, site_template: str | None = None):
    """Within the block, ``capture(layer, x)`` sees each output projection's input ``x`` (B, T, H*d) as the
    model computed it, with every adapter off and the model in eval mode; all is restored on exit."""
    sites = find_head_sites(model, site_template)
    handles = [site.output.register_forward_pre_hook(lambda m, args, layer=site.layer: capture(layer, args[0]), prepend=True)
               for site in sites]
    adapters_off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    try:
        with adapters_off:
            yield sites
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


@torch.no_grad()
def head_output_rms(model, batches: Iterable[dict], site_template: str | None = None) -> torch.Tensor:
    """(L, H) root-mean-square of each head's output (the output projection's input) over the real
    tokens of ``batches`` (dicts of ``input_ids`` / ``attention_mask``), with every adapter off.

    It measures how large a head's output is, so that per-head edits can be sized relative to it."""
    sites = find_head_sites(model, site_template)
    num_heads, head_dim = sites[0].num_heads, sites[0].head_dim
    squares = torch.zeros(len(sites), num_heads, dtype=torch.float64)
    mask_of_call: list[torch.Tensor] = []

    def capture(layer, x):
        heads = x.unflatten(-1, (num_heads, head_dim)).double()  # (B, T, H, d)
        squares[layer] += (heads.pow(2).mean(-1) * mask_of_call[0][..., None]).sum((0, 1)).cpu()

    device = next(model.parameters()).device
    tokens = 0
    with capturing_head_inputs(model, capture, site_template):
        for batch in progress(batches, "head output scale"):
            input_ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask")
            mask = torch.ones_like(input_ids) if mask is None else mask.to(device)
            mask_of_call[:] = [mask.double()]
            model(input_ids=input_ids, attention_mask=mask)
            tokens += int(mask.sum())
    if tokens == 0:
        raise ValueError("head_output_rms got no tokens: pass at least one non-empty batch")
    return (squares / tokens).sqrt().float()
