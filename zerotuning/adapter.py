"""ZeroTuning's math, for each chosen head h, on the attention logits of every query row:

    logit[h, q, k0] <- logit[h, q, k0] + ln(gamma_h)        k0 = first non-pad key of the row

which equals multiplying the post-softmax weight on k0 by gamma_h and renormalising. It is applied as
an additive float attention mask built in a forward pre-hook of the attention module, so the model's
own ``eager`` or ``sdpa`` attention runs unchanged (no attention function is registered).
"""

from __future__ import annotations

import torch
from torch import nn

from headwise.adapter import HeadLayer
from headwise.calls import AttentionCall
from headwise.compat import attn_implementation
from headwise.sites import HeadSite
from headwise.tuner import HeadTuner

from .config import ZeroTuningConfig

__all__ = ["ZeroTuningLayer", "ZeroTuningModel", "SUPPORTED_ATTENTION", "initial_key_mask"]

SUPPORTED_ATTENTION = ("eager", "sdpa")


def initial_key_mask(call, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(additive, initial), both (B, 1, Tq, Tk) in ``dtype``: the call's additive attention mask, and 1 at
    each row's first real key wherever that key may be attended (0 elsewhere). The same for every layer
    of a forward pass, so it is built once per mask (``AttentionCall.shared``)."""
    allowed, additive = call.masks(dtype)
    first_key = allowed[:, 0, -1, :].int().argmax(-1)  # (B,) first non-pad key of each row
    keys = torch.arange(allowed.shape[-1], device=allowed.device)
    at_first = (keys[None, :] == first_key[:, None])[:, None, None, :]  # (B, 1, 1, Tk)
    return additive, (at_first & allowed).to(dtype)


class ZeroTuningLayer(HeadLayer):
    adapter_layer_names = ("zerotuning_log_gamma",)

    def __init__(self, site: HeadSite) -> None:
        super().__init__(site)
        self.zerotuning_log_gamma = nn.ParameterDict()  # adapter -> (n_selected,) fp32 ln(gamma)
        config = getattr(site.attention, "config", None)
        layer_types = getattr(config, "layer_types", None)
        sliding = layer_types is not None and layer_types[site.layer] == "sliding_attention"
        window = getattr(config, "sliding_window", None)
        self.sliding_window = window if (sliding or (layer_types is None and window)) else None

    def create_parameters(self, adapter_name: str, num_selected: int, config: ZeroTuningConfig) -> None:
        value = torch.log(torch.tensor(float(config.gamma)))
        log_gamma = torch.full((num_selected,), float(value), dtype=torch.float32)
        if not config.init_weights:  # random gammas around the configured one, for tests
            log_gamma += torch.randn(num_selected)
        self.zerotuning_log_gamma[adapter_name] = nn.Parameter(log_gamma)

    def log_gamma(self, adapter_name: str) -> torch.Tensor:
        """(H,) ln(gamma) of this layer's heads under ``adapter_name`` (0 for untouched heads)."""
        return self.full_head_tensor(self.zerotuning_log_gamma[adapter_name], adapter_name, fill=0.0)

    def row_tensors(self, adapter_name: str) -> dict[str, torch.Tensor]:
        return {"log_gamma": self.log_gamma(adapter_name)}

    def row_identity(self) -> dict[str, torch.Tensor]:
        return {"log_gamma": torch.zeros(self.num_heads, device=self.device)}

    def edit_mask_rows(self, mask: torch.Tensor | None, tensors: dict[str, torch.Tensor], call: AttentionCall) -> torch.Tensor:
        return self._bias(mask, tensors["log_gamma"][:, :, None, None], call)  # (B, H, 1, 1)

    def edit_mask(self, mask: torch.Tensor | None, adapter_name: str, call: AttentionCall) -> torch.Tensor:
        return self._bias(mask, self.log_gamma(adapter_name).view(1, -1, 1, 1), call)

    def _bias(self, mask: torch.Tensor | None, log_gamma: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        """The mask with ln gamma (``(1|B, H, 1, 1)``) added to the logit of each row's first real key."""
        if self.sliding_window is not None and call.k_len > self.sliding_window:
            raise ValueError(
                f"layer {self.site.layer} uses a sliding window of {self.sliding_window} tokens and this sequence is "
                f"{call.k_len} long: its initial token is out of the window. Target full-attention layers only."
            )
        call.check_tensor_mask()
        dtype = call.hidden_states.dtype if call.hidden_states.dtype.is_floating_point else torch.float32
        additive, initial = call.shared(f"zerotuning {dtype}", lambda: initial_key_mask(call, dtype))
        if mask is None:
            mask = additive
        if log_gamma.dtype != mask.dtype:
            log_gamma = log_gamma.to(mask.dtype)
        # (B, 1|H, Tq, Tk) + (B, 1, Tq, Tk) * (1|B, H, 1, 1) -> (B, H, Tq, Tk): one pass, nothing else per layer
        return torch.addcmul(mask, initial, log_gamma)

    @classmethod
    def head_quantity(cls, saved: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str, bool]:
        """ln gamma: the bias on the first key's logit (> 0 draws attention to it, < 0 away)."""
        return saved["zerotuning_log_gamma"].float(), "ln gamma (> 0: more attention to the first token)", True

    def merge_refusal(self, adapter_name: str) -> str | None:
        return (
            "ZeroTuning cannot be merged: it rescales attention weights (a softmax input), which no weight of the "
            "model can express. Keep the adapter attached, or save it with save_pretrained()."
        )


class ZeroTuningModel(HeadTuner):
    """PEFT tuner for ZeroTuning; ``headwise.wrap(model, ZeroTuningConfig(...))``."""

    prefix = "zerotuning_"
    tuner_layer_cls = ZeroTuningLayer

    def check_sites(self, config: ZeroTuningConfig, sites: list[HeadSite]) -> None:
        model_config = getattr(sites[0].attention, "config", None) or getattr(self.model, "config", None)
        implementation = attn_implementation(model_config)
        if implementation not in SUPPORTED_ATTENTION:
            raise ValueError(
                f"ZeroTuning needs the attention mask as a 4-D tensor, which the {implementation!r} attention "
                f"implementation does not take; use one of {SUPPORTED_ATTENTION}: "
                "model.set_attn_implementation('sdpa') or from_pretrained(..., attn_implementation='sdpa')"
            )
