"""Head gates as an adapter, for each chosen head h at the chosen positions:

    z_h <- a_h * z_h + (1 - a_h) * m_h          (a: gate_scale, m: gate_baseline, 0 unless set)

At every position the gate is affine in z, so it folds exactly into the output projection
(W' = W diag(a), b' = b + W (1 - a) m); merged weights are restored exactly on unmerge (the folded
columns are kept, since a = 0 cannot be divided out).
"""

from __future__ import annotations

import torch
from headwise.compat import BufferDict
from torch import nn

from headwise.adapter import HeadLayer
from headwise.calls import AttentionCall
from headwise.tuner import HeadTuner

from .config import HeadGateConfig
from .positions import select_real_positions

__all__ = ["HeadGateLayer", "HeadGateModel", "set_baseline", "gate_scales"]


class HeadGateLayer(HeadLayer):
    adapter_layer_names = ("gate_scale",)
    other_param_names = ("head_index", "gate_baseline", "gate_positions", "gate_trainable")

    def __init__(self, site) -> None:
        super().__init__(site)
        self.gate_scale = nn.ParameterDict()  # adapter -> (n_selected,) fp32 a
        self.gate_baseline = BufferDict({}, persistent=True)  # adapter -> (n_selected, d) fp32 m
        self.gate_positions: dict[str, list[int] | None] = {}
        self.gate_trainable: dict[str, bool] = {}

    def create_parameters(self, adapter_name: str, num_selected: int, config: HeadGateConfig) -> None:
        scale = torch.full((num_selected,), config.scale, dtype=torch.float32)
        if not config.init_weights:  # random gates, for tests
            scale = scale + torch.randn(num_selected)
        self.gate_scale[adapter_name] = nn.Parameter(scale, requires_grad=config.trainable)
        self.gate_baseline[adapter_name] = torch.zeros(num_selected, self.head_dim)
        self.gate_positions[adapter_name] = config.positions
        self.gate_trainable[adapter_name] = config.trainable

    def set_adapter(self, adapter_names, inference_mode: bool = False) -> None:
        super().set_adapter(adapter_names, inference_mode=inference_mode)
        for name, param in self.gate_scale.items():  # a fixed gate stays fixed
            if not self.gate_trainable.get(name, True):
                param.requires_grad_(False)

    def gain_and_shift(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, 1) gain a and (H, d) shift (1 - a) m of this layer (identity on untouched heads)."""
        scale = self.full_head_tensor(self.gate_scale[adapter_name], adapter_name, fill=1.0)[:, None]
        baseline = self.full_head_tensor(self.gate_baseline[adapter_name].float(), adapter_name, fill=0.0)
        return scale, (1 - scale) * baseline

    def row_tensors(self, adapter_name: str) -> dict[str, torch.Tensor] | None:
        if self.gate_positions.get(adapter_name) is not None:
            return None  # positions differ per adapter: the per-adapter path
        gain, shift = self.gain_and_shift(adapter_name)
        return {"gain": gain, "shift": shift}

    def row_identity(self) -> dict[str, torch.Tensor]:
        return {"gain": torch.ones(self.num_heads, 1, device=self.device),
                "shift": torch.zeros(self.num_heads, self.head_dim, device=self.device)}

    def edit_heads_rows(self, heads: torch.Tensor, tensors: dict[str, torch.Tensor], call) -> torch.Tensor:
        # heads (B, T, H, d); gain (B, H, 1), shift (B, H, d)
        return torch.addcmul(tensors["shift"][:, None], heads, tensors["gain"][:, None])

    def edit_heads(self, heads: torch.Tensor, adapter_name: str, call: AttentionCall | None) -> torch.Tensor:
        gain, shift = self.gain_and_shift(adapter_name)
        gated = torch.addcmul(shift, heads, gain)  # (B, T, H, d)
        positions = self.gate_positions.get(adapter_name)
        if positions is None:
            return gated
        if call is None:
            raise RuntimeError(
                f"the head gate {adapter_name!r} acts at positions {positions}, but layer {self.site.layer}'s output "
                "projection ran outside an attention call, so the positions are unknown: run the whole model"
            )
        rows = call.shared(f"gate positions {positions}", lambda: select_real_positions(call.real_keys(), positions))
        rows = rows[:, call.past_length:call.past_length + call.q_len]
        return torch.where(rows.to(heads.device)[:, :, None, None], gated, heads)

    @classmethod
    def head_quantity(cls, saved: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str, bool]:
        """a - 1: how far the gate moves the head from itself (-1 replaces it by its baseline)."""
        return saved["gate_scale"].float() - 1, "gate a - 1 (< 0: the head damped; -1: replaced by its baseline)", True

    def merge_refusal(self, adapter_name: str) -> str | None:
        positions = self.gate_positions.get(adapter_name)
        if positions is not None:
            return (f"the head gate {adapter_name!r} acts at chosen positions ({positions}) only, which no weight can express; only a "
                    "gate at every position (positions=None) merges. Keep it attached, or save it with save_pretrained().")
        return None


class HeadGateModel(HeadTuner):
    """PEFT tuner for head gates; ``headwise.wrap(model, HeadGateConfig(heads=[(l, h)], scale=0.0))``."""

    prefix = "gate_"
    tuner_layer_cls = HeadGateLayer

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        super()._mark_only_adapters_as_trainable(model)
        for holder in self.holders():
            holder.set_adapter(holder.active_adapters)


def _tuner(model) -> HeadGateModel:
    tuner = getattr(model, "base_model", None)
    if not isinstance(tuner, HeadGateModel):
        raise TypeError("this model carries no head gate: wrap it with headwise.wrap(model, HeadGateConfig(...)) first")
    return tuner


def set_baseline(model, values: torch.Tensor, adapter_name: str = "default") -> None:
    """Give the gated heads the baseline ``m``: an ``(L, H, d)`` tensor, e.g. ``interventions.mean_heads(...)``
    (mean ablation when the gate's scale is 0). Saved with the adapter."""
    tuner = _tuner(model)

    def write(holder, rows):
        holder.gate_baseline[adapter_name] = rows.float().to(holder.gate_baseline[adapter_name].device).clone()

    if values.dim() != 3 or values.shape[-1] != tuner.peft_config[adapter_name].head_dim:
        raise ValueError(f"the baseline is (layers, heads, head_dim), got {tuple(values.shape)}")
    tuner.write_heads(adapter_name, values, write)


def gate_scales(model, adapter_name: str = "default") -> torch.Tensor:
    """(L, H) the gate's scale a per head (1 where the adapter leaves the head alone)."""
    return _tuner(model).read_heads(adapter_name, lambda holder: holder.gate_scale[adapter_name], fill=1.0)
