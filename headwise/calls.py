"""What one attention call is (hidden states, mask, keys already cached), read once from its arguments.

The base reads it in a pre-hook of the attention module and hands it to every holder that declared
the ``"attention_call"`` hook, so cache detection lives in one place and a holder's later hooks in
the same call (the head-output edit) see the same facts.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["AttentionCall", "read_attention_call"]

# Facts derived from an attention mask, shared by the layers of one forward pass: transformers hands
# every layer of one attention type the same mask tensor, so the first layer computes them and the
# others reuse them. An entry is keyed by the mask object and its version (an in-place edit
# invalidates it) and dropped when the mask is freed, so a new mask at a reused address never hits
# an old entry and nothing outlives the forward pass. Facts of mask-less calls (sdpa without padding)
# depend on the shapes alone; the oldest entries go beyond a few.
_MASK_FACTS: OrderedDict[tuple, tuple[Any, dict[str, Any]]] = OrderedDict()
_MASK_FACTS_SIZE = 4  # masks alive at once: full and sliding attention, a nested model call


def _version(tensor: torch.Tensor) -> int:
    return -1 if tensor.is_inference() else tensor._version  # inference tensors cannot be edited in place


def _drop_entry(key: tuple) -> Callable[[Any], None]:
    return lambda _ref: _MASK_FACTS.pop(key, None)


@dataclass(frozen=True)
class AttentionCall:
    layer: int
    hidden_states: torch.Tensor  # (B, Tq, hidden)
    attention_mask: torch.Tensor | None  # as the attention module receives it (often (B, 1, Tq, Tk))
    past_length: int  # keys of this layer already in the cache before this call

    @property
    def batch(self) -> int:
        return self.hidden_states.shape[0]

    @property
    def q_len(self) -> int:
        return self.hidden_states.shape[1]

    @property
    def is_prefill(self) -> bool:
        """No cached keys for this layer yet: the prompt pass (every pass, without a KV cache)."""
        return self.past_length == 0

    @property
    def k_len(self) -> int:
        """Keys this call attends over: the cached ones and its own (full attention)."""
        return self.past_length + self.q_len

    def shared(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per attention mask (and query length, cached length, batch): later layers
        of the same forward pass get the stored value. For facts that depend on the mask alone; the
        value is shared, so callers must not edit it in place. Under ``torch.compile`` it is plain
        ``compute()``: the compiler sees the whole graph and dedups the work itself."""
        if torch.compiler.is_compiling():
            return compute()
        mask = self.attention_mask
        shape = (self.batch, self.q_len, self.past_length, self.hidden_states.device)
        key = ("no mask", *shape) if mask is None else (id(mask), _version(mask), *shape)
        entry = _MASK_FACTS.get(key)
        if entry is None or (mask is not None and entry[0]() is not mask):
            owner = None if mask is None else weakref.ref(mask, _drop_entry(key))
            entry = _MASK_FACTS[key] = (owner, {})
            while len(_MASK_FACTS) > _MASK_FACTS_SIZE:
                _MASK_FACTS.popitem(last=False)
        facts = entry[1]
        if name not in facts:
            facts[name] = compute()
        return facts[name]

    def masks(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(allowed, additive): the attention mask as a boolean ``(B, 1|H, Tq, Tk)`` tensor (True = may
        attend) and as an additive one in ``dtype`` (0 / finfo(dtype).min). A missing mask (sdpa without
        padding) is the causal mask with the cached keys before the queries. Shared across layers:
        do not edit them in place."""
        return self.shared(f"masks {dtype}", lambda: self._masks(dtype))

    def _masks(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        mask, device = self.attention_mask, self.hidden_states.device
        if mask is None:  # one (Tq, Tk) causal pattern, expanded over the batch (no copy per row)
            keys = torch.arange(self.k_len, device=device)
            queries = torch.arange(self.q_len, device=device)[:, None] + self.past_length
            causal = keys[None, :] <= queries  # (Tq, Tk)
            additive = torch.zeros(causal.shape, dtype=dtype, device=device).masked_fill(~causal, torch.finfo(dtype).min)
            shape = (self.batch, 1, self.q_len, self.k_len)
            return causal.expand(shape), additive.expand(shape)
        if mask.dtype == torch.bool:
            allowed = mask.clone()  # a copy: a stored fact must not keep the mask (and so its entry) alive
            additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
            return allowed, additive
        allowed = mask > torch.finfo(mask.dtype).min / 2
        return allowed, mask.to(dtype).clamp_min(torch.finfo(dtype).min)  # a float mask is already additive

    def real_keys(self) -> torch.Tensor:
        """(B, Tk) bool: the keys that are tokens, not padding. The last query row of a full-attention
        mask allows every real key (with left padding it is a real token, with right padding a pad row
        that still sees the real tokens before it)."""
        return self.shared("real keys", lambda: self.masks()[0][:, 0, -1, :].expand(self.batch, -1))


def _cache_of(args: tuple, kwargs: dict):
    cache = kwargs.get("cache", kwargs.get("past_key_values", kwargs.get("layer_past")))
    if cache is None:
        cache = next((a for a in args[1:] if hasattr(a, "get_seq_length")), None)
    return cache if hasattr(cache, "get_seq_length") else None


def read_attention_call(layer: int, args: tuple, kwargs: dict) -> AttentionCall:
    """The facts of one attention call, from the arguments its pre-hook sees (``with_kwargs=True``)."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    cache = _cache_of(args, kwargs)
    past = int(cache.get_seq_length(layer)) if cache is not None else 0
    return AttentionCall(layer, hidden, kwargs.get("attention_mask"), past)
