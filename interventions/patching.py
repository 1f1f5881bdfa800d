"""Patching head outputs for analysis: zero, mean and activation patching, and constant scaling, per
head and position, as a context manager.

    with interventions.patch(model, {(5, 1): "zero", (7, 3): means[7, 3], (9, 0): clean}, positions=last_token(mask)):
        logits = model(ids, attention_mask=mask).logits

A value is ``"zero"``; a float (scale the head's output: 0 ablates); a ``(d,)`` vector (e.g. a mean over
a reference set) written at every selected position; a ``(B, T, d)`` tensor or a
:class:`~interventions.cache.HeadActivations` of another run with the same batch layout (activation
patching). ``positions`` is a ``(B, T)`` mask from a selector (None: every position, every call).
With the KV cache, a position counts where it falls in the sequence, prefill or decoding step.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Mapping, Union

import torch
from torch import nn

from headwise.heads import group_by_layer

from .cache import HeadActivations, cache_heads
from .hooks import check_head, query_slice, sites_for, temporary_hooks
from .positions import all_tokens, check_positions

__all__ = ["patch", "mean_heads", "PatchValue"]

PatchValue = Union[str, float, int, torch.Tensor, HeadActivations]


def _normalise(edits: Mapping[tuple[int, int], PatchValue], sites, batch: int | None) -> dict[tuple[int, int], tuple[str, object]]:
    """Check every edit before any hook exists: ('scale', a) or ('replace', tensor (d,) or (B, T, d))."""
    out = {}
    for key, value in edits.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"patch keys are (layer, head) pairs, got {key!r}")
        layer, head = int(key[0]), int(key[1])
        site = sites[layer]
        check_head(site, layer, head)
        if isinstance(value, str):
            if value != "zero":
                raise ValueError(f"head {key}: the only named patch is 'zero' (for a mean, pass interventions.mean_heads(...)[{layer}, {head}])")
            out[(layer, head)] = ("scale", 0.0)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[(layer, head)] = ("scale", float(value))
        else:
            tensor = value[(layer, head)] if isinstance(value, HeadActivations) else value
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"head {key}: a patch value is 'zero', a float, a tensor or HeadActivations, got {type(value).__name__}")
            if tensor.shape[-1] != site.head_dim or tensor.dim() not in (1, 3):
                raise ValueError(f"head {key}: a patch tensor is (head_dim,) or (batch, tokens, head_dim) with head_dim={site.head_dim}, "
                                 f"got {tuple(tensor.shape)}")
            if tensor.dim() == 3 and batch is not None and tensor.shape[0] != batch:
                raise ValueError(f"head {key}: the patch holds {tensor.shape[0]} rows but positions has {batch}")
            out[(layer, head)] = ("replace", tensor.detach().float())
    if not out:
        raise ValueError("patch() got no heads to patch")
    return out


@contextlib.contextmanager
def patch(model: nn.Module, edits: Mapping[tuple[int, int], PatchValue], positions: torch.Tensor | None = None) -> Iterator[None]:
    """Patch the given heads' outputs inside the ``with`` block; the model is unchanged after it."""
    if positions is not None:
        positions = check_positions(positions)
    sites = sites_for(model, [int(layer) for layer, _ in edits])
    plan = _normalise(edits, sites, None if positions is None else positions.shape[0])
    by_layer = {layer: [(head, *plan[(layer, head)]) for head in heads] for layer, heads in group_by_layer(plan).items()}

    def edit(site, call, heads):
        rows = query_slice(positions, call)  # (B, Tq) or None
        start = call.past_length
        heads = heads.clone()  # the view may share memory with the attention output autograd still needs
        for head, kind, value in by_layer[site.layer]:
            current = heads[:, :, head]  # (B, Tq, d)
            if kind == "scale":
                new = current * value
            elif value.dim() == 1:
                new = value.to(current.device).expand_as(current)
            else:
                new = current.clone()
                stop = min(start + call.q_len, value.shape[1])
                if stop > start:
                    if value.shape[0] != current.shape[0]:
                        raise ValueError(f"head ({site.layer}, {head}): the patch holds {value.shape[0]} rows, the batch {current.shape[0]}")
                    new[:, : stop - start] = value[:, start:stop].to(current.device)
            if rows is not None:
                new = torch.where(rows[..., None], new, current)
            heads[:, :, head] = new
        return heads

    with temporary_hooks(sites, edit_heads=edit):
        yield


def mean_heads(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], positions=all_tokens
) -> torch.Tensor:
    """``(L, H, d)`` mean head outputs over a reference set, at the positions ``positions(batch)`` selects
    (a selector taking the batch's attention mask); call once per
    position class (e.g. ``last_token`` and ``all_tokens``) for per-class means."""
    total = None
    count = 0
    for batch in batches:
        mask = batch.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(batch["input_ids"])
        chosen = check_positions(positions(mask), mask.shape[0])
        acts = cache_heads(model, batch["input_ids"], mask)
        selected = acts.heads[:, chosen.cpu()]  # (L, n, H, d)
        total = selected.sum(1) if total is None else total + selected.sum(1)
        count += int(chosen.sum())
    if not count:
        raise ValueError("mean_heads saw no selected position: give at least one batch with a selected token")
    return total / count
