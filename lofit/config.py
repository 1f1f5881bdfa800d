"""LofitConfig: which heads get LoFiT's offset (and optionally scale) vectors."""

from __future__ import annotations

from dataclasses import dataclass, field

from headwise.config import AdapterConfig

__all__ = ["LofitConfig"]


@dataclass
class LofitConfig(AdapterConfig):
    """LoFiT (Yin et al., 2024): ``z <- (1 + A) * z + v`` on the chosen heads' outputs, every position.

    Phase 1 (head selection) uses ``heads='all', use_scale=True, use_offset=False, l1_lambda>0``;
    phase 2 uses the selected heads with offsets only (the defaults).
    """

    use_offset: bool = field(default=True, metadata={"help": "Train an offset vector v per head."})
    use_scale: bool = field(default=False, metadata={"help": "Train a scale vector A per head: z <- (1 + A) * z."})
    init_std: float = field(default=1e-3, metadata={"help": "v is drawn from N(0, init_std^2) (not zero)."})
    scale_init_std: float = field(default=1e-3, metadata={"help": "A is drawn from N(0, scale_init_std^2)."})
    l1_lambda: float = field(
        default=0.0,
        metadata={"help": "Adds l1_lambda * sum|A| (a sum over all elements) to the loss; for head selection."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not (self.use_offset or self.use_scale):
            raise ValueError("LofitConfig needs use_offset=True, use_scale=True, or both")
        if self.l1_lambda < 0 or self.init_std < 0 or self.scale_init_std < 0:
            raise ValueError("l1_lambda, init_std and scale_init_std must be >= 0")
