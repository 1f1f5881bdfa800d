"""Batches and from-scratch references shared by the interventions tests (written here, not read from headwise)."""

from __future__ import annotations

import contextlib

import torch

from tiny_models import PINNED_HEAD_DIM, PINNED_SITES

PROMPTS = [[5, 17, 33, 8, 41, 12, 7], [9, 23, 4], [30, 6, 19, 27, 11]]


def left_padded(prompts=PROMPTS):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def head_dim(arch: str) -> int:
    return PINNED_HEAD_DIM.get(arch, 8)


def output_module(model, arch: str, layer: int):
    return dict(model.named_modules())[PINNED_SITES[arch].format(layer)]


@contextlib.contextmanager
def reference_head_edit(model, arch: str, edit):
    """``edit(layer, x)`` gets each pinned output projection's input (B, T, H*d) and returns it edited."""
    handles = [
        output_module(model, arch, layer).register_forward_pre_hook(lambda m, args, layer=layer: (edit(layer, args[0].clone()),))
        for layer in range(model.config.num_hidden_layers)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def full_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False).logits


def cached_logits(model, ids, mask, prefill: int):
    """Logits of a prefill of the first ``prefill`` columns, then one column at a time through the KV cache:
    (B, T - prefill + 1, V) for positions prefill-1 .. T-1."""
    positions = position_ids(mask)
    with torch.no_grad():
        out = model(input_ids=ids[:, :prefill], attention_mask=mask[:, :prefill], position_ids=positions[:, :prefill], use_cache=True)
        steps, cache = [out.logits[:, -1]], out.cache
        for column in range(prefill, ids.shape[1]):
            out = model(input_ids=ids[:, column:column + 1], attention_mask=mask[:, :column + 1],
                        position_ids=positions[:, column:column + 1], cache=cache, use_cache=True)
            steps.append(out.logits[:, -1])
            cache = out.cache
    return torch.stack(steps, dim=1)
