"""Attention edits for analysis: override a head's attention pattern, or block keys from it.

Override (the circuit-reuse repair): a head's output at query q is ``z_h(q) = sum_k a_k v_h(k)``, so
``with override_attention(model, {(l, h): pattern}, queries=...)`` writes ``sum_k a'_k v_h(k)`` into
that head's slice of the output projection's input at the chosen queries. The values are the very
ones the model's attention used (recorded from the call; cached keys included; query head h reads
KV head ``h // (H / H_kv)``), so the edit is the same under eager, sdpa and flash attention.

Blocking: ``with block_keys(model, heads, keys=..., queries=...)`` puts ``-inf`` on those (head, query,
key) logits through the 4-D float attention mask (eager and sdpa), as ZeroTuning's bias does.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn

from headwise.heads import group_by_layer

from .hooks import check_head, check_mask_backend, query_slice, recorded_values, sites_for, temporary_hooks
from .positions import check_positions

__all__ = ["override_attention", "block_keys", "uniform_pattern"]


def uniform_pattern(keys: torch.Tensor) -> torch.Tensor:
    """(B, T) fp32 attention spread evenly over the selected keys of each row (e.g. the distractors)."""
    keys = check_positions(keys, what="keys")
    counts = keys.sum(-1, keepdim=True)
    if (counts == 0).any():
        raise ValueError(f"rows {torch.nonzero(counts[:, 0] == 0).flatten().tolist()} select no key to attend to")
    return keys.float() / counts


def _key_columns(values: torch.Tensor, length: int) -> torch.Tensor:
    """A (B, T) per-key tensor cut or zero-padded to ``length`` keys."""
    if values.shape[1] >= length:
        return values[:, :length]
    return torch.cat([values, values.new_zeros(values.shape[0], length - values.shape[1])], dim=1)


@contextlib.contextmanager
def override_attention(
    model: nn.Module, patterns: Mapping[tuple[int, int], torch.Tensor], queries: torch.Tensor
) -> Iterator[None]:
    """Inside the block, the given heads attend with ``patterns[(layer, head)]`` at the ``queries``.

    A pattern is a ``(B, T)`` tensor over the batch's key positions: a bool mask (attention spread
    uniformly over its keys) or non-negative weights (normalised per row). It must put weight only on
    real keys at or before every selected query (causal), which is checked at each call.
    """
    if not patterns:
        raise ValueError("override_attention() got no heads")
    queries = check_positions(queries, what="queries")
    sites = sites_for(model, [int(layer) for layer, _ in patterns])
    weights = {}
    for (layer, head), pattern in patterns.items():
        check_head(sites[int(layer)], int(layer), int(head))
        if not isinstance(pattern, torch.Tensor) or pattern.dim() != 2 or pattern.shape[0] != queries.shape[0]:
            raise ValueError(f"head ({layer}, {head}): a pattern is a (batch={queries.shape[0]}, keys) tensor, got "
                             f"{type(pattern).__name__} {tuple(getattr(pattern, 'shape', ()))}")
        if pattern.dtype == torch.bool:
            pattern = uniform_pattern(pattern)
        elif (pattern < 0).any() or not torch.isfinite(pattern).all():
            raise ValueError(f"head ({layer}, {head}): attention weights must be finite and >= 0")
        mass = pattern.float().sum(-1, keepdim=True)
        selected_rows = queries.any(-1)
        if (selected_rows & (mass[:, 0] <= 0)).any():
            raise ValueError(f"head ({layer}, {head}): rows {torch.nonzero(selected_rows & (mass[:, 0] <= 0)).flatten().tolist()} "
                             "have an overridden query but no attention weight")
        weights[(int(layer), int(head))] = pattern.float() / mass.clamp_min(1e-30)
    by_layer = group_by_layer(weights)

    def edit(site, call, heads):
        values = recorded_values(call)
        if values is None:
            raise RuntimeError(f"layer {site.layer}: the attention module did not pass its values through the cache "
                               "argument, so override_attention cannot recompute its heads")
        rows = query_slice(queries, call)  # (B, Tq)
        if not rows.any():
            return heads
        num_keys = values.shape[2]
        groups = site.num_heads // values.shape[1]
        real = call.real_keys()[:, :num_keys]
        query_positions = torch.arange(call.q_len, device=rows.device) + call.past_length
        first_query = torch.where(rows, query_positions, num_keys).min(-1).values  # (B,)
        heads = heads.clone()
        for head in by_layer[site.layer]:
            pattern = _key_columns(weights[(site.layer, head)].to(values.device), num_keys)  # (B, Tk)
            weighted = pattern > 0
            later = weighted & (torch.arange(num_keys, device=values.device) > first_query[:, None])
            if later.any() or (weighted & ~real.to(weighted.device)).any():
                raise ValueError(
                    f"head ({site.layer}, {head}): the pattern puts weight on a padding key or on a key after an "
                    "overridden query; attention is causal, so only earlier real keys can be attended to"
                )
            mixed = torch.einsum("bk,bkd->bd", pattern, values[:, head // groups].float())  # (B, d)
            heads[:, :, head] = torch.where(rows[..., None], mixed[:, None, :], heads[:, :, head])
        return heads

    with temporary_hooks(sites, edit_heads=edit, record_values=True):
        yield


@contextlib.contextmanager
def block_keys(
    model: nn.Module, heads: Iterable[tuple[int, int]], keys: torch.Tensor, queries: torch.Tensor | None = None
) -> Iterator[None]:
    """Inside the block, the given heads cannot attend to ``keys`` (a (B, T) mask) from ``queries``
    (a (B, T) mask; None = every query). A query left with no key to attend to is an error."""
    heads = sorted({(int(layer), int(head)) for layer, head in heads})
    if not heads:
        raise ValueError("block_keys() got no heads")
    check_mask_backend(model, "block_keys")
    keys = check_positions(keys, what="keys")
    if queries is not None:
        queries = check_positions(queries, keys.shape[0], "queries")
    sites = sites_for(model, [layer for layer, _ in heads])
    for layer, head in heads:
        check_head(sites[layer], layer, head)
    by_layer = group_by_layer(heads)

    def edit_mask(site, call, mask):
        allowed, additive = call.masks()
        batch, num_heads, q_len, num_keys = call.batch, site.num_heads, call.q_len, allowed.shape[-1]
        key_rows = _key_columns(keys.to(allowed.device).float(), num_keys) > 0  # (B, Tk)
        query_rows = query_slice(queries, call) if queries is not None else torch.ones(batch, q_len, dtype=torch.bool, device=allowed.device)
        blocked = torch.zeros(batch, num_heads, q_len, num_keys, dtype=torch.bool, device=allowed.device)
        for head in by_layer[site.layer]:
            blocked[:, head] = query_rows.to(allowed.device)[:, :, None] & key_rows[:, None, :]
        allowed = allowed.expand(batch, num_heads, q_len, num_keys)
        emptied = allowed.any(-1) & ~(allowed & ~blocked).any(-1) & query_rows.to(allowed.device)[:, None, :]
        if emptied.any():
            b, h, q = torch.nonzero(emptied)[0].tolist()
            raise ValueError(f"head ({site.layer}, {h}) would attend to nothing at row {b}, position {q + call.past_length}: "
                             "blocking every key it may see leaves softmax undefined; keep at least one key")
        dtype = call.hidden_states.dtype if call.hidden_states.dtype.is_floating_point else torch.float32
        start = additive if mask is None else mask  # an earlier edit of this call (an adapter's) is kept
        return start.to(dtype).expand(batch, num_heads, q_len, num_keys).masked_fill(blocked, torch.finfo(dtype).min)

    with temporary_hooks(sites, edit_mask=edit_mask):
        yield
