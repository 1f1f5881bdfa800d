"""ZeroTuning: initial-token attention scaling per head (Han et al., 2025)."""

from headwise.registry import HeadPeftType, register_method

from .adapter import ZeroTuningLayer, ZeroTuningModel
from .config import ZeroTuningConfig

register_method(HeadPeftType.ZEROTUNING, ZeroTuningConfig, ZeroTuningModel)

__all__ = ["ZeroTuningConfig", "ZeroTuningLayer", "ZeroTuningModel"]
