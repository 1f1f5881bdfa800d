"""ZeroTuning: initial-token attention scaling per head (Han et al., 2025)."""

from headwise.registry import register_method

from .adapter import ZeroTuningLayer, ZeroTuningModel
from .calibrate import (
    DEFAULT_GAMMAS, HeadProfile, calibrate, entropy_score, label_accuracy_score, profile_heads, set_gamma,
)
from .config import ZeroTuningConfig

register_method("ZEROTUNING", ZeroTuningConfig, ZeroTuningModel)

__all__ = [
    "DEFAULT_GAMMAS", "HeadProfile", "ZeroTuningConfig", "ZeroTuningLayer", "ZeroTuningModel", "calibrate",
    "entropy_score", "label_accuracy_score", "profile_heads", "set_gamma",
]
