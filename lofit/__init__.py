"""LoFiT: localized fine-tuning of a sparse set of attention heads (Yin, Ye, Durrett, NeurIPS 2024)."""

from headwise.registry import HeadPeftType, register_method

from .adapter import LofitLayer, LofitModel
from .config import LofitConfig
from .select import HeadSelection, fit, select_heads, train_offsets

register_method(HeadPeftType.LOFIT, LofitConfig, LofitModel)

__all__ = ["HeadSelection", "LofitConfig", "LofitLayer", "LofitModel", "fit", "select_heads", "train_offsets"]
