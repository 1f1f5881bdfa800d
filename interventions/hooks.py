"""Temporary hooks for the analysis context managers: one attention pre-hook and one output-projection
pre-hook per touched layer, removed on exit (also when the body raises).

Per attention call the pre-hook reads the call (:class:`headwise.calls.AttentionCall`), may rewrite
the attention mask, and may record the value vectors attention uses: it hands the attention module
a cache that passes every ``update`` through to the real cache (or to none) and keeps the returned
values ``(B, H_kv, T_k, d)``, so the values are exactly the ones the model's kernel saw, whatever the
backend, with the KV cache and with GQA.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from headwise.calls import AttentionCall, read_attention_call
from headwise.sites import HeadSite, find_head_sites

__all__ = ["LayerState", "temporary_hooks", "sites_for"]

_CACHE_NAMES = ("cache", "layer_past", "past_key_values")
MASK_IMPLEMENTATIONS = ("eager", "sdpa")


@dataclass
class LayerState:
    """What the hooks of one layer know about the attention call in progress."""

    site: HeadSite
    call: AttentionCall | None = None
    values: torch.Tensor | None = None  # (B, H_kv, T_k, d) when recorded
    extra: dict = field(default_factory=dict)


class _RecordingCache:
    """Stands in for the layer's cache: forwards ``update`` to the real one (if any) and keeps the values."""

    def __init__(self, inner, state: LayerState) -> None:
        self._inner = inner
        self._state = state

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self._inner is not None:
            key_states, value_states = self._inner.update(key_states, value_states, layer_idx, *args, **kwargs)
        self._state.values = value_states
        return key_states, value_states

    def __getattr__(self, name):
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def _cache_parameter(attention: nn.Module) -> str:
    parameters = inspect.signature(attention.forward).parameters
    found = next((name for name in _CACHE_NAMES if name in parameters), None)
    if found is None:
        raise TypeError(
            f"{type(attention).__name__}.forward takes no cache argument ({'/'.join(_CACHE_NAMES)}): headwise cannot read "
            "the value vectors this attention uses"
        )
    return found


def sites_for(model: nn.Module, layers, site_template: str | None = None) -> dict[int, HeadSite]:
    """The head sites of ``layers``, checked against the model."""
    sites = find_head_sites(model, site_template)
    out = {}
    for layer in sorted(set(layers)):
        if not 0 <= layer < len(sites):
            raise IndexError(f"layer {layer} is out of range; the model has layers 0..{len(sites) - 1}")
        out[layer] = sites[layer]
    return out


def check_head(site: HeadSite, layer: int, head: int) -> None:
    if not 0 <= head < site.num_heads:
        raise IndexError(f"head ({layer}, {head}): head {head} is out of range; each layer has heads 0..{site.num_heads - 1}")


def check_mask_backend(model: nn.Module, what: str) -> None:
    """Mask edits need a backend that takes a 4-D float mask."""
    config = getattr(model.get_base_model() if hasattr(model, "get_base_model") else model, "config", None)
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in MASK_IMPLEMENTATIONS:
        raise ValueError(
            f"{what} edits the attention mask, which the {implementation!r} attention implementation does not take; "
            f"use one of {MASK_IMPLEMENTATIONS}: model.set_attn_implementation('sdpa')"
        )


@contextlib.contextmanager
def temporary_hooks(
    sites: dict[int, HeadSite],
    edit_heads: Callable[[LayerState, torch.Tensor], torch.Tensor] | None = None,
    edit_mask: Callable[[LayerState], torch.Tensor | None] | None = None,
    record_values: bool = False,
) -> Iterator[dict[int, LayerState]]:
    """Attach the hooks to every site; yield the per-layer states; remove every hook on exit.

    ``edit_heads(state, heads)`` gets the fp32 ``(B, T_q, H, d)`` head outputs and returns them edited;
    ``edit_mask(state)`` returns a new 4-D attention mask (or None to keep it).
    """
    states = {layer: LayerState(site) for layer, site in sites.items()}
    cache_names = {layer: _cache_parameter(site.attention) for layer, site in sites.items()} if record_values else {}
    handles = []

    def make_attention_hook(state: LayerState, layer: int):
        def hook(module, args, kwargs):
            state.call = read_attention_call(layer, args, kwargs)
            state.values = None
            changed = False
            if record_values:
                name = next((n for n in _CACHE_NAMES if kwargs.get(n) is not None), cache_names[layer])
                kwargs[name] = _RecordingCache(kwargs.get(name), state)
                changed = True
            if edit_mask is not None:
                mask = edit_mask(state)
                if mask is not None:
                    kwargs["attention_mask"] = mask
                    changed = True
            return (args, kwargs) if changed else None

        return hook

    def make_output_hook(state: LayerState):
        def hook(module, args):
            x = args[0]
            heads = x.unflatten(-1, (state.site.num_heads, state.site.head_dim)).float()  # (B, Tq, H, d)
            return (edit_heads(state, heads).flatten(-2).to(x.dtype), *args[1:])

        return hook

    try:
        for layer, state in states.items():
            if record_values or edit_mask is not None or edit_heads is not None:
                handles.append(state.site.attention.register_forward_pre_hook(make_attention_hook(state, layer), with_kwargs=True))
            if edit_heads is not None:
                handles.append(state.site.output.register_forward_pre_hook(make_output_hook(state)))
        yield states
    finally:
        for handle in handles:
            handle.remove()


def query_slice(positions: torch.Tensor | None, call: AttentionCall) -> torch.Tensor | None:
    """The rows of a (B, T) position mask that this call's queries occupy, (B, T_q) bool; positions past
    the mask's end (tokens generated after it) are not selected. None stays None (every query)."""
    if positions is None:
        return None
    start, stop = call.past_length, call.past_length + call.q_len
    out = torch.zeros(call.batch, call.q_len, dtype=torch.bool, device=call.hidden_states.device)
    available = max(0, min(stop, positions.shape[1]) - start)
    if available:
        out[:, :available] = positions[:, start:start + available].to(out.device)
    return out
