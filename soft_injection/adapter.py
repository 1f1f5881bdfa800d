"""Soft injection's math, at every selected head h of every layer, at the last prompt token only:

    z_h <- (1 - a_h) * z_h + a_h * t_h,      a_h = sigmoid(theta_h)

and only on the prefill pass (no past keys/values for the layer yet); decoding steps see the
injection through the KV cache. With left padding the last prompt token of every row is position -1.
"""

from __future__ import annotations

import torch
from peft.tuners._buffer_dict import BufferDict
from torch import nn

from headwise.adapter import HeadLayer
from headwise.tuner import HeadTuner

from .config import SoftInjectionConfig

__all__ = ["SoftInjectionLayer", "SoftInjectionModel", "is_prefill"]


def is_prefill(layer: int, args: tuple, kwargs: dict) -> bool:
    """True when this attention call has no past keys/values for its layer (prefill, or no cache)."""
    cache = kwargs.get("cache", kwargs.get("past_key_values", kwargs.get("layer_past")))
    if cache is None:
        cache = next((a for a in args[1:] if hasattr(a, "get_seq_length")), None)
    if cache is None or not hasattr(cache, "get_seq_length"):
        return True
    return cache.get_seq_length(layer) == 0


class SoftInjectionLayer(HeadLayer):
    adapter_layer_names = ("soft_injection_theta",)
    other_param_names = ("head_index", "soft_injection_embedding")

    def __init__(self, site) -> None:
        super().__init__(site)
        self.soft_injection_theta = nn.ParameterDict()  # adapter -> (n_selected,) fp32
        self.soft_injection_embedding = BufferDict({}, persistent=True)  # adapter -> (n_selected, d) fp32
        self._in_prefill = True  # set by the attention pre-hook of the call in progress

    def attach(self) -> None:
        super().attach()
        self._hook_handles.append(self.site.attention.register_forward_pre_hook(self._note_pass, with_kwargs=True))

    def _note_pass(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # Decided afresh at every attention call from its own arguments, so a re-run (activation
        # checkpointing) decides the same way.
        self._in_prefill = is_prefill(self.site.layer, args, kwargs)

    @classmethod
    def state_names(cls, config: SoftInjectionConfig) -> tuple[set[str], set[str]]:
        return {"soft_injection_theta", "soft_injection_embedding"}, set()

    def create_parameters(self, adapter_name: str, num_selected: int, config: SoftInjectionConfig) -> None:
        device = self._device()
        self.soft_injection_theta[adapter_name] = nn.Parameter(
            torch.full((num_selected,), float(config.init_theta), dtype=torch.float32, device=device)
        )
        self.soft_injection_embedding[adapter_name] = torch.zeros(num_selected, self.head_dim, device=device)

    def alpha(self, adapter_name: str) -> torch.Tensor:
        """(H,) mixing weights of this layer; 0 for heads the adapter does not touch."""
        return self.full_head_tensor(torch.sigmoid(self.soft_injection_theta[adapter_name]), adapter_name, fill=0.0)

    def edit_heads(self, heads: torch.Tensor, adapter_name: str) -> torch.Tensor:
        if not self._in_prefill:
            return heads
        alpha = self.alpha(adapter_name)[:, None]  # (H, 1)
        task = self.full_head_tensor(self.soft_injection_embedding[adapter_name].float(), adapter_name, fill=0.0)
        last = (1 - alpha) * heads[:, -1] + alpha * task  # (B, H, d)
        return torch.cat([heads[:, :-1], last[:, None]], dim=1)


class SoftInjectionModel(HeadTuner):
    """PEFT tuner for soft injection; build it with ``soft_injection.inject`` or ``soft_injection.fit``."""

    tuner_layer_cls = SoftInjectionLayer
