"""Soft injection's math, at every selected head h of every layer, at the last prompt token only:

    z_h <- (1 - a_h) * z_h + a_h * t_h,      a_h = sigmoid(theta_h)

and only on the prefill pass (no past keys/values for the layer yet); decoding steps see the
injection through the KV cache. The last prompt token of each row is read from the attention mask
(the last token that attends to itself), so left and right padding both inject at the right place.
"""

from __future__ import annotations

import torch
from headwise.compat import BufferDict
from torch import nn

from headwise.adapter import HeadLayer
from headwise.calls import AttentionCall
from headwise.tuner import HeadTuner

from .config import SoftInjectionConfig

__all__ = ["SoftInjectionLayer", "SoftInjectionModel", "last_real_positions"]


def last_real_positions(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """(B,) index of each row's last real token from a 4-D attention mask (B, 1, T, T) of a prefill:
    a real token attends to itself, a padding token does not. None when there is no padding mask."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[-1] != length or mask.shape[-2] != length:
        return None
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    diagonal = torch.diagonal(allowed[:, 0], dim1=-2, dim2=-1)  # (B, T): token t attends to itself
    return length - 1 - diagonal.flip(-1).int().argmax(-1)


class SoftInjectionLayer(HeadLayer):
    adapter_layer_names = ("soft_injection_theta",)
    other_param_names = ("head_index", "soft_injection_embedding")

    def __init__(self, site) -> None:
        super().__init__(site)
        self.soft_injection_theta = nn.ParameterDict()  # adapter -> (n_selected,) fp32
        self.soft_injection_embedding = BufferDict({}, persistent=True)  # adapter -> (n_selected, d) fp32

    def acts_on(self, call: AttentionCall | None) -> bool:
        return call is None or call.is_prefill  # decoding steps see the injection through the cache

    def create_parameters(self, adapter_name: str, num_selected: int, config: SoftInjectionConfig) -> None:
        theta = torch.full((num_selected,), float(config.init_theta), dtype=torch.float32)
        if not config.init_weights:  # random mixing weights, for tests
            theta.normal_(0.0, 2.0)
        self.soft_injection_theta[adapter_name] = nn.Parameter(theta)
        self.soft_injection_embedding[adapter_name] = torch.zeros(num_selected, self.head_dim)

    def alpha(self, adapter_name: str) -> torch.Tensor:
        """(H,) mixing weights of this layer; 0 for heads the adapter does not touch."""
        return self.full_head_tensor(torch.sigmoid(self.soft_injection_theta[adapter_name]), adapter_name, fill=0.0)

    def task_embedding(self, adapter_name: str) -> torch.Tensor:
        """(H, d) task embedding of this layer; 0 for heads the adapter does not touch."""
        return self.full_head_tensor(self.soft_injection_embedding[adapter_name].float(), adapter_name, fill=0.0)

    def row_tensors(self, adapter_name: str) -> dict[str, torch.Tensor]:
        return {"alpha": self.alpha(adapter_name)[:, None], "task": self.task_embedding(adapter_name)}

    def row_identity(self) -> dict[str, torch.Tensor]:
        return {"alpha": torch.zeros(self.num_heads, 1, device=self.device),
                "task": torch.zeros(self.num_heads, self.head_dim, device=self.device)}

    def edit_heads_rows(self, heads: torch.Tensor, tensors: dict[str, torch.Tensor], call: AttentionCall) -> torch.Tensor:
        return self._inject(heads, tensors["alpha"], tensors["task"], call)  # alpha (B, H, 1), task (B, H, d)

    def edit_heads(self, heads: torch.Tensor, adapter_name: str, call: AttentionCall | None) -> torch.Tensor:
        return self._inject(heads, self.alpha(adapter_name)[:, None], self.task_embedding(adapter_name), call)

    def _inject(self, heads: torch.Tensor, alpha: torch.Tensor, task: torch.Tensor, call: AttentionCall | None) -> torch.Tensor:
        """z <- (1 - alpha) z + alpha t at each row's last prompt token; alpha (H, 1) | (B, H, 1), t (H, d) | (B, H, d)."""
        positions = None
        if call is not None:  # once per forward pass, shared by the layers
            positions = call.shared("last real positions", lambda: last_real_positions(call.attention_mask, call.q_len))
        if positions is None:  # no padding mask: the last token of every row is the prompt's last
            last = (1 - alpha) * heads[:, -1] + alpha * task  # (B, H, d)
            return torch.cat([heads[:, :-1], last[:, None]], dim=1)
        rows = torch.arange(heads.shape[0], device=heads.device)  # one gather, no host sync, any padding side
        positions = positions.to(heads.device)
        mixed = (1 - alpha) * heads[rows, positions] + alpha * task  # (B, H, d)
        return heads.index_put((rows, positions), mixed)

    @classmethod
    def head_quantity(cls, saved: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str, bool]:
        """alpha = sigmoid(theta): how much of the head's output the task embedding replaces."""
        return torch.sigmoid(saved["soft_injection_theta"].float()), "alpha: share of the head output replaced (0 to 1)", False

    def merge_refusal(self, adapter_name: str) -> str | None:
        return ("soft injection cannot be merged into the model's weights: it mixes the task embedding into the last "
                "prompt token only, on the prefill pass, which no weight can express. Keep the adapter attached, or save "
                "it with save_pretrained() and load it with headwise.from_pretrained().")


class SoftInjectionModel(HeadTuner):
    """PEFT tuner for soft injection; build it with ``soft_injection.inject`` or ``soft_injection.fit``."""

    prefix = "soft_injection_"
    tuner_layer_cls = SoftInjectionLayer
