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
    hooks = ("attention_call",)  # a bias on the attention mask; the head outputs are left alone

    def __init__(self, site: HeadSite) -> None:
        super().__init__(site)
        self.zerotuning_log_gamma = nn.ParameterDict()  # adapter -> (n_selected,) fp32 ln(gamma)
        config = getattr(site.attention, "config", None)
        layer_types = getattr(config, "layer_types", None)
        sliding = layer_types is not None and layer_types[site.layer] == "sliding_attention"
        window = getattr(config, "sliding_window", None)
        self.sliding_window = window if (sliding or (layer_types is None and window)) else None

    @classmethod
    def state_names(cls, config: ZeroTuningConfig) -> tuple[set[str], set[str]]:
        return {"zerotuning_log_gamma"}, set()

    def create_parameters(self, adapter_name: str, num_selected: int, config: ZeroTuningConfig) -> None:
        value = torch.log(torch.tensor(float(config.gamma)))
        log_gamma = torch.full((num_selected,), float(value), dtype=torch.float32, device=self._device())
        if not config.init_weights:  # random gammas around the configured one, for tests
            log_gamma += torch.randn(num_selected, device=log_gamma.device)
        self.zerotuning_log_gamma[adapter_name] = nn.Parameter(log_gamma)

    def log_gamma(self) -> torch.Tensor | None:
        """(H,) sum of the applied adapters' ln(gamma) (0 for untouched heads), or None."""
        adapters = self.applied_adapters()
        if not adapters:
            return None
        total = self.full_head_tensor(self.zerotuning_log_gamma[adapters[0]], adapters[0], fill=0.0)
        for name in adapters[1:]:
            total = total + self.full_head_tensor(self.zerotuning_log_gamma[name], name, fill=0.0)
        return total

    def on_attention_call(self, call, args: tuple, kwargs: dict):
        log_gamma = self.log_gamma()
        if log_gamma is None:
            return None
        if self.sliding_window is not None and call.k_len > self.sliding_window:
            raise ValueError(
                f"layer {self.site.layer} uses a sliding window of {self.sliding_window} tokens and this sequence is "
                f"{call.k_len} long: its initial token is out of the window. Target full-attention layers only."
            )
        dtype = call.hidden_states.dtype if call.hidden_states.dtype.is_floating_point else torch.float32
        additive, initial = call.shared(f"zerotuning {dtype}", lambda: initial_key_mask(call, dtype))
        if log_gamma.dtype != additive.dtype:
            log_gamma = log_gamma.to(additive.dtype)
        # (B, 1, Tq, Tk) + (B, 1, Tq, Tk) * (1, H, 1, 1) -> (B, H, Tq, Tk): one pass, nothing else per layer
        kwargs["attention_mask"] = torch.addcmul(additive, initial, log_gamma.view(1, -1, 1, 1))
        return args, kwargs

    def check_mergeable(self) -> None:
        raise TypeError(
            "ZeroTuning cannot be merged: it rescales attention weights (a softmax input), which no weight of the "
            "model can express. Keep the adapter attached, or save it with save_pretrained()."
        )


class ZeroTuningModel(HeadTuner):
    """PEFT tuner for ZeroTuning; ``headwise.wrap(model, ZeroTuningConfig(...))``."""

    prefix = "zerotuning_"
    tuner_layer_cls = ZeroTuningLayer

    def check_sites(self, config: ZeroTuningConfig, sites: list[HeadSite]) -> None:
        model_config = getattr(sites[0].attention, "config", None) or getattr(self.model, "config", None)
        implementation = getattr(model_config, "_attn_implementation", None)
        if implementation not in SUPPORTED_ATTENTION:
            raise ValueError(
                f"ZeroTuning needs the attention mask as a 4-D tensor, which the {implementation!r} attention "
                f"implementation does not take; use one of {SUPPORTED_ATTENTION}: "
                "model.set_attn_implementation('sdpa') or from_pretrained(..., attn_implementation='sdpa')"
            )
