"""LoFiT: localized fine-tuning of a sparse set of attention heads (Yin, Ye, Durrett, NeurIPS 2024)."""

from headwise.registry import register_method

from .adapter import LofitLayer, LofitModel
from .config import LofitConfig
from .select import HeadSelection, fit, select_heads, train_offsets
from .units import offset_units_from_data, set_offset_units

register_method("LOFIT", LofitConfig, LofitModel)

__all__ = [
    "HeadSelection", "LofitConfig", "LofitLayer", "LofitModel", "fit", "offset_units_from_data", "select_heads",
    "set_offset_units", "train_offsets",
]
