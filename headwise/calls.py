"""What one attention call is (hidden states, mask, keys already cached), read once from its arguments.

The base reads it in a pre-hook of the attention module and hands it to every holder that declared
the ``"attention_call"`` hook, so cache detection lives in one place and a holder's later hooks in
the same call (the head-output edit) see the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AttentionCall", "read_attention_call"]


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

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(allowed, additive): the attention mask as a boolean ``(B, 1|H, Tq, Tk)`` tensor (True = may
        attend) and as an fp32 additive one (0 / finfo.min). A missing mask (sdpa without padding) is
        the causal mask with the cached keys before the queries."""
        mask, device = self.attention_mask, self.hidden_states.device
        if mask is None:
            keys = torch.arange(self.k_len, device=device)
            queries = torch.arange(self.q_len, device=device)[:, None] + self.past_length
            allowed = (keys[None, :] <= queries)[None, None].expand(self.batch, 1, self.q_len, self.k_len)
        elif mask.dtype == torch.bool:
            allowed = mask
        else:
            allowed = mask > torch.finfo(mask.dtype).min / 2
        if mask is not None and mask.dtype != torch.bool:
            additive = mask.float()
        else:
            additive = torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, torch.finfo(torch.float32).min)
        return allowed, additive

    def real_keys(self) -> torch.Tensor:
        """(B, Tk) bool: the keys that are tokens, not padding. The last query row of a full-attention
        mask allows every real key (with left padding it is a real token, with right padding a pad row
        that still sees the real tokens before it)."""
        allowed, _ = self.masks()
        return allowed[:, 0, -1, :].expand(self.batch, -1)


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
