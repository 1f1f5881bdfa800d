"""LoFiT's math: per-head scale A and offset v on the attention output projection's input.

    z_h <- (1 + A_h) * z_h + v_h        for each selected head h, at every token position

The offset is stored as ``v_h = unit_h * u_h``: ``u`` is the trained parameter and ``unit_h`` a saved
per-head constant (1 by default; ``lofit.set_offset_units`` sets it to the head's output scale), so an
optimiser step of a given size moves every head's offset by the same share of that head's output.

Merging folds it exactly into the projection: W' = W diag(1 + A), b' = b + W v.
"""

from __future__ import annotations

import torch
from headwise.compat import BufferDict
from torch import nn

from headwise.adapter import HeadLayer
from headwise.tuner import HeadTuner

from .config import LofitConfig

__all__ = ["LofitLayer", "LofitModel"]


class LofitLayer(HeadLayer):
    adapter_layer_names = ("lofit_offset", "lofit_scale")
    other_param_names = ("head_index", "lofit_l1", "lofit_offset_unit")

    def __init__(self, site) -> None:
        super().__init__(site)
        self.lofit_offset = nn.ParameterDict()  # adapter -> (n_selected, d) fp32: u, with v = unit * u
        self.lofit_offset_unit = BufferDict({}, persistent=True)  # adapter -> (n_selected, 1) fp32
        self.lofit_scale = nn.ParameterDict()  # adapter -> (n_selected, d) fp32
        self.lofit_l1: dict[str, float] = {}

    def create_parameters(self, adapter_name: str, num_selected: int, config: LofitConfig) -> None:
        random_start = 0.0 if config.init_weights else 0.5  # init_weights=False: clearly non-identity, for tests
        if config.use_offset:
            self.lofit_offset[adapter_name] = self.new_parameter(num_selected, random_start or config.init_std)
            self.lofit_offset_unit[adapter_name] = torch.ones(num_selected, 1)
        if config.use_scale:
            self.lofit_scale[adapter_name] = self.new_parameter(num_selected, random_start or config.scale_init_std)
        self.lofit_l1[adapter_name] = config.l1_lambda

    def edit_heads(self, heads: torch.Tensor, adapter_name: str, call) -> torch.Tensor:
        # heads: (B, T, H, d) fp32; gain and shift broadcast as (H, d)
        gain, shift = self.gain_and_shift(adapter_name)
        if gain is not None and shift is not None:
            return torch.addcmul(shift, heads, gain)  # one pass over the heads
        if gain is not None:
            heads = heads * gain
        if shift is not None:
            heads = heads + shift
        return heads

    def row_tensors(self, adapter_name: str) -> dict[str, torch.Tensor]:
        gain, shift = self.gain_and_shift(adapter_name)
        identity = self.row_identity()
        return {"gain": identity["gain"] if gain is None else gain, "shift": identity["shift"] if shift is None else shift}

    def row_identity(self) -> dict[str, torch.Tensor]:
        shape = (self.num_heads, self.head_dim)
        return {"gain": torch.ones(shape, device=self.device), "shift": torch.zeros(shape, device=self.device)}

    def edit_heads_rows(self, heads: torch.Tensor, tensors: dict[str, torch.Tensor], call) -> torch.Tensor:
        # heads (B, T, H, d); gain and shift (B, H, d), one row per batch row
        return torch.addcmul(tensors["shift"][:, None], heads, tensors["gain"][:, None])

    def gain_and_shift(self, adapter_name: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The (H, d) multiplier 1 + A and addend v of this layer (None where unused)."""
        gain = shift = None
        if adapter_name in self.lofit_scale:
            gain = self.full_head_tensor(1.0 + self.lofit_scale[adapter_name], adapter_name, fill=1.0)
        if adapter_name in self.lofit_offset:
            shift = self.full_head_tensor(self.offset(adapter_name), adapter_name, fill=0.0)
        return gain, shift

    def offset(self, adapter_name: str) -> torch.Tensor:
        """(n_selected, d) offsets v = unit * u of this layer's selected heads."""
        return self.lofit_offset[adapter_name] * self.lofit_offset_unit[adapter_name]

    def set_offset_unit(self, adapter_name: str, unit: torch.Tensor) -> None:
        """Measure the offsets in ``unit`` (n_selected,) from now on, keeping v itself unchanged."""
        unit = unit.to(self.lofit_offset_unit[adapter_name]).reshape(-1, 1)
        with torch.no_grad():
            self.lofit_offset[adapter_name].mul_(self.lofit_offset_unit[adapter_name] / unit)
        self.lofit_offset_unit[adapter_name] = unit

    @classmethod
    def head_quantity(cls, saved: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str, bool]:
        """The offset's RMS against the head's own output RMS (its unit, when trained in head-RMS units);
        with scales only, the mean scale change A (signed)."""
        if "lofit_offset" not in saved:
            return saved["lofit_scale"].float().mean(dim=1), "mean scale change A (the head is multiplied by 1 + A)", True
        unit = saved.get("lofit_offset_unit", torch.ones(len(saved["lofit_offset"]), 1)).float()
        offset_rms = (saved["lofit_offset"].float() * unit).pow(2).mean(dim=1).sqrt()
        if torch.all(unit == 1):
            return offset_rms, "offset RMS (model units; trained without head-RMS units)", False
        return offset_rms / unit.squeeze(1), "offset RMS / the head's output RMS", False

    def regularization(self, adapter_name: str) -> torch.Tensor | None:
        l1 = self.lofit_l1.get(adapter_name, 0.0)
        if not l1 or adapter_name not in self.lofit_scale:
            return None
        return l1 * self.lofit_scale[adapter_name].abs().sum()


class LofitModel(HeadTuner):
    """PEFT tuner for LoFiT; use ``headwise.wrap(model, LofitConfig(...))`` or ``peft.get_peft_model``."""

    prefix = "lofit_"
    tuner_layer_cls = LofitLayer
