"""What one attention call is (hidden states, mask, keys already cached), read once from its arguments.

The site hooks (:mod:`headwise.hooks`) read it when the attention module is called and hand it to
every edit of that call, so cache detection lives in one place. A call object lives as long as the
call: nothing of it is kept on a module.

Facts derived from the mask alone (where each row's real tokens are, the additive mask) are the same
in every layer of one forward pass, so :meth:`AttentionCall.shared` computes them once and stores
them *on the mask tensor itself* (or, without a mask, on another tensor every layer of the pass
receives, such as ``position_ids``): they live exactly as long as that object, belong to the thread
that made it, and an in-place edit of the mask invalidates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .compat import tensor_version
from .mixed import RowAdapters, current_rows

__all__ = ["AttentionCall", "read_attention_call"]

_FACTS = "_headwise_facts"  # the attribute that holds the facts on their owner


def _fact_store(owner: Any) -> dict | None:
    """The dict of facts kept on ``owner`` (created on first use), or None where nothing can be kept."""
    if owner is None:
        return None
    store = getattr(owner, _FACTS, None)
    if store is None:
        try:
            store = {}
            setattr(owner, _FACTS, store)
        except (AttributeError, TypeError, RuntimeError):  # an object without a __dict__
            return None
    return store


@dataclass(frozen=True)
class AttentionCall:
    """One call of one attention module. ``notes`` carries what the edits of this call pass to each
    other (e.g. the value vectors the attention used); it is dropped with the call."""

    layer: int
    hidden_states: torch.Tensor  # (B, Tq, hidden)
    attention_mask: Any  # as the attention module receives it (often a (B, 1, Tq, Tk) tensor; None for sdpa without padding)
    past_length: int  # keys of this layer already in the cache before this call
    pass_token: Any = field(default=None, compare=False, repr=False)  # an object every layer of the pass shares
    notes: dict = field(default_factory=dict, compare=False, repr=False)
    rows: RowAdapters | None = field(default=None, compare=False, repr=False)  # one adapter per row (mixed batch)

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
        if mask is not None and not isinstance(mask, torch.Tensor):
            return compute()
        store = _fact_store(mask if mask is not None else self.pass_token)
        if store is None:
            return compute()
        key = (name, self.batch, self.q_len, self.past_length, self.hidden_states.device,
               -2 if mask is None else tensor_version(mask))
        value = store.get(key)
        if value is None:
            value = store[key] = compute()
        return value

    def select_rows(self, index: torch.Tensor) -> AttentionCall:
        """The same call for the rows ``index`` only (a mixed batch's rows of one adapter); its shared facts
        are its own (the mask slice is a new tensor), and it carries no row adapters."""
        mask = self.attention_mask
        if isinstance(mask, torch.Tensor) and mask.shape[0] == self.batch:
            mask = mask.index_select(0, index.to(mask.device))
        return AttentionCall(self.layer, self.hidden_states.index_select(0, index.to(self.hidden_states.device)), mask,
                             self.past_length, None)

    def masks(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(allowed, additive): the attention mask as a boolean ``(B, 1|H, Tq, Tk)`` tensor (True = may
        attend) and as an additive one in ``dtype`` (0 / finfo(dtype).min). A missing mask (sdpa without
        padding) is the causal mask with the cached keys before the queries. Shared across layers:
        do not edit them in place."""
        self.check_tensor_mask()
        return self.shared(f"masks {dtype}", lambda: self._masks(dtype))

    def check_tensor_mask(self) -> None:
        """Raise a clear error when the attention implementation passes no mask tensor (e.g. flex attention)."""
        mask = self.attention_mask
        if mask is not None and not isinstance(mask, torch.Tensor):
            raise TypeError(
                f"layer {self.layer} received its attention mask as a {type(mask).__name__}, not a tensor: this attention "
                "implementation cannot take an edited mask. Use eager or sdpa attention: "
                "model.set_attn_implementation('sdpa')"
            )

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
            allowed = mask.clone()  # a copy: a fact stored on the mask must not refer back to it
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


def _pass_token(kwargs: dict) -> Any:
    """An object handed to every layer of one forward pass and dropped after it (for mask-less facts)."""
    for name in ("position_ids", "cache_position"):
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor):
            return value
    embeddings = kwargs.get("position_embeddings")
    if isinstance(embeddings, tuple) and embeddings and isinstance(embeddings[0], torch.Tensor):
        return embeddings[0]
    return None  # (not the KV cache: it outlives the pass, and facts keyed by cached length would pile up on it)


def read_attention_call(layer: int, args: tuple, kwargs: dict) -> AttentionCall:
    """The facts of one attention call, from the arguments its pre-hook sees (``with_kwargs=True``)."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    cache = _cache_of(args, kwargs)
    past = int(cache.get_seq_length(layer)) if cache is not None else 0
    rows = current_rows()
    if rows is not None and len(rows) != hidden.shape[0]:
        raise ValueError(f"Length of `adapter_names` should be the same as the number of inputs, but got {len(rows)} and "
                         f"{hidden.shape[0]} respectively: give one adapter name per row ('__base__' for the bare model)")
    return AttentionCall(layer, hidden, kwargs.get("attention_mask"), past, _pass_token(kwargs), rows=rows)
