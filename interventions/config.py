"""HeadGateConfig: a saved, optionally trainable per-head gate (scale, ablate, or pull toward a mean)."""

from __future__ import annotations

from dataclasses import dataclass, field

from headwise.config import AdapterConfig

__all__ = ["HeadGateConfig"]


@dataclass
class HeadGateConfig(AdapterConfig):
    """``z_h <- a_h * z_h + (1 - a_h) * m_h`` on the chosen heads: ``a = 0`` with ``m = 0`` zero-ablates, with
    ``m`` a mean (``interventions.set_baseline``) mean-ablates; ``a`` is a constant scale otherwise (the
    factual-recall paper's fix scales heads down). At every position, or at chosen real-token indices."""

    scale: float = field(default=0.0, metadata={"help": "Initial a of every chosen head (0 ablates, 1 leaves the head alone)."})
    trainable: bool = field(default=False, metadata={"help": "Train a by gradient (otherwise it stays fixed, and is still saved)."})
    positions: list[int] | None = field(
        default=None,
        metadata={"help": "Real-token indices where the gate acts (0 = first real token, -1 = last; padding is skipped); "
                  "None: every position. Only an every-position gate merges into the weights."},
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or self.scale != self.scale:
            raise ValueError(f"scale must be a number, got {self.scale!r}")
        self.scale = float(self.scale)
        if self.positions is not None:
            if isinstance(self.positions, int) and not isinstance(self.positions, bool):
                self.positions = [self.positions]
            if not isinstance(self.positions, (list, tuple)) or not self.positions or not all(
                isinstance(p, int) and not isinstance(p, bool) for p in self.positions
            ):
                raise ValueError(f"positions must be a non-empty list of integer token indices (or None), got {self.positions!r}")
            self.positions = sorted(set(self.positions))
