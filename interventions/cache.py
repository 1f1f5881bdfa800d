"""A head-resolution activation cache: every head's output (the output projection's input) of one run,
plus what attribution needs from it (the final norm's input and output, the logits)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from headwise.sites import find_head_sites

from .hooks import temporary_hooks
from .unembed import final_norm

__all__ = ["HeadActivations", "cache_heads"]


@dataclass
class HeadActivations:
    """One run's head outputs: ``heads`` is ``(L, B, T, H, d)`` fp32 on the CPU."""

    heads: torch.Tensor
    attention_mask: torch.Tensor | None  # (B, T) of the run, or None
    logits: torch.Tensor  # (B, T, V) fp32
    final_norm_input: torch.Tensor  # (B, T, D): the residual stream before the final norm
    final_norm_output: torch.Tensor  # (B, T, D)

    def __getitem__(self, head: tuple[int, int]) -> torch.Tensor:
        """(B, T, d): the output of head ``(layer, head)`` at every position."""
        layer, index = head
        num_layers, _, _, num_heads, _ = self.heads.shape
        if not (0 <= layer < num_layers and 0 <= index < num_heads):
            raise IndexError(f"head {head} is outside this cache's {num_layers} layers x {num_heads} heads")
        return self.heads[layer, :, :, index]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.heads.shape)


def cache_heads(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **forward_kwargs) -> HeadActivations:
    """Run ``model`` once (no gradients, no KV cache) and keep every head's output at every position."""
    sites = {site.layer: site for site in find_head_sites(model)}
    captured: dict[int, torch.Tensor] = {}
    norm_io: dict[str, torch.Tensor] = {}

    def record(site, call, heads):
        captured[site.layer] = heads.detach().cpu()  # after the model's own adapters edited them
        return heads

    def record_norm(module, args, output):
        norm_io["input"] = args[0].detach().float().cpu()
        norm_io["output"] = output.detach().float().cpu()

    handle = final_norm(model).register_forward_hook(record_norm)
    try:
        with temporary_hooks(sites, edit_heads=record, observe_only=True), torch.no_grad():
            output = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **forward_kwargs)
    finally:
        handle.remove()
    heads = torch.stack([captured[layer] for layer in sorted(sites)])  # (L, B, T, H, d)
    return HeadActivations(
        heads=heads,
        attention_mask=None if attention_mask is None else attention_mask.detach().cpu(),
        logits=output.logits.detach().float().cpu(),
        final_norm_input=norm_io["input"],
        final_norm_output=norm_io["output"],
    )
