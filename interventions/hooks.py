"""The analysis context managers' edits, on headwise's one hook primitive (:mod:`headwise.hooks`).

Each context manager registers one :class:`TemporaryEdit` per touched site for the duration of its
block (removed on exit, also when the body raises). Like the adapters, an edit keeps nothing of a
call: the call arrives as an argument, and the value vectors attention used are recorded into the
call itself (``call.notes["values"]``) by a cache that passes every ``update`` through to the real one
(or to none), so they are exactly the ones the model's kernel saw, whatever the backend, with the KV
cache and with GQA. The edits run after the model's adapters, on the fp32 head outputs (in bf16/fp16
the projection is recomputed in fp32, as for adapters).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Callable, Iterator

import torch
from torch import nn

from headwise.calls import AttentionCall
from headwise.compat import attn_implementation
from headwise.hooks import SiteEdit, add_edit, remove_edit
from headwise.sites import HeadSite, find_head_sites

__all__ = ["TemporaryEdit", "temporary_hooks", "sites_for", "recorded_values"]

_CACHE_NAMES = ("cache", "layer_past", "past_key_values")
MASK_IMPLEMENTATIONS = ("eager", "sdpa")

HeadsEdit = Callable[[HeadSite, AttentionCall, torch.Tensor], torch.Tensor]
MaskEdit = Callable[[HeadSite, AttentionCall, "torch.Tensor | None"], "torch.Tensor | None"]


class _RecordingCache:
    """Stands in for the layer's cache for one call: forwards ``update`` to the real one (if any) and
    notes the values in the call."""

    def __init__(self, inner, call: AttentionCall) -> None:
        self._inner = inner
        self._call = call

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self._inner is not None:
            key_states, value_states = self._inner.update(key_states, value_states, layer_idx, *args, **kwargs)
        self._call.notes["values"] = value_states
        return key_states, value_states

    def __getattr__(self, name):
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def recorded_values(call: AttentionCall) -> torch.Tensor | None:
    """(B, H_kv, T_k, d): the value vectors this call's attention used, when an edit asked to record them."""
    return call.notes.get("values")


class TemporaryEdit(SiteEdit):
    """One site's analysis edit: any of a head edit, a mask edit and value recording."""

    def __init__(self, site: HeadSite, edit_heads: HeadsEdit | None, edit_mask: MaskEdit | None,
                 record_values: bool, observe_only: bool) -> None:
        self.site = site
        self.edit_heads = edit_heads
        self.edit_mask = edit_mask
        self.cache_name = _cache_parameter(site.attention) if record_values else None
        self.changes_heads = not observe_only

    def site_roles(self) -> set[str]:
        roles = set()
        if self.edit_heads is not None:
            roles.add("heads")
        if self.edit_mask is not None:
            roles.add("mask")
        if self.cache_name is not None:
            roles.add("arguments")
        return roles

    def apply_heads(self, heads: torch.Tensor, call: AttentionCall | None) -> torch.Tensor:
        if call is None:
            raise RuntimeError(f"layer {self.site.layer}'s output projection ran outside an attention call: "
                               "the analysis edit cannot place it; run the whole model")
        return self.edit_heads(self.site, call, heads)

    def apply_mask(self, mask: torch.Tensor | None, call: AttentionCall) -> torch.Tensor | None:
        return self.edit_mask(self.site, call, mask)

    def apply_arguments(self, call: AttentionCall, args: tuple, kwargs: dict):
        name = next((n for n in _CACHE_NAMES if kwargs.get(n) is not None), self.cache_name)
        kwargs[name] = _RecordingCache(kwargs.get(name), call)
        return args, kwargs


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
    implementation = attn_implementation(config)
    if implementation not in MASK_IMPLEMENTATIONS:
        raise ValueError(
            f"{what} edits the attention mask, which the {implementation!r} attention implementation does not take; "
            f"use one of {MASK_IMPLEMENTATIONS}: model.set_attn_implementation('sdpa')"
        )


@contextlib.contextmanager
def temporary_hooks(
    sites: dict[int, HeadSite],
    edit_heads: HeadsEdit | None = None,
    edit_mask: MaskEdit | None = None,
    record_values: bool = False,
    observe_only: bool = False,
) -> Iterator[None]:
    """Register a :class:`TemporaryEdit` at every site for the block.

    ``edit_heads(site, call, heads)`` gets the fp32 ``(B, T_q, H, d)`` head outputs and returns them
    edited (``observe_only``: returned unchanged, e.g. recorded); ``edit_mask(site, call, mask)`` returns
    a new additive 4-D attention mask (``mask``: an earlier edit's, or None for the call's own)."""
    edits = [(site, TemporaryEdit(site, edit_heads, edit_mask, record_values, observe_only)) for site in sites.values()]
    added = []
    try:
        for site, edit in edits:
            add_edit(site, edit)
            added.append((site, edit))
        yield
    finally:
        for site, edit in reversed(added):
            remove_edit(site, edit)


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
