"""ZeroTuningConfig: which heads get a learnable attention scale gamma on the initial token."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from headwise.config import AdapterConfig

__all__ = ["ZeroTuningConfig"]


@dataclass
class ZeroTuningConfig(AdapterConfig):
    """ZeroTuning (Han et al. 2025): scale each chosen head's attention to the first non-pad token by
    gamma and renormalise, i.e. add ``ln gamma`` to that key's pre-softmax logit, at every forward and
    every decoding step. Works with the ``eager`` and ``sdpa`` attention implementations.
    """

    gamma: float = field(default=1.0, metadata={"help": "Initial gamma of every chosen head (> 0; 1 = no change)."})

    def __post_init__(self):
        super().__post_init__()
        gamma = self.gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma}")
