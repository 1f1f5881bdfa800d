"""Keeping bitsandbytes 4-bit bases trainable on the CPU.

bitsandbytes 0.50 repacks a ``Linear4bit`` weight for a fast CPU inference kernel the first time the
layer runs in eval mode without gradients (e.g. an evaluation before training). From then on the layer
passes no gradient to its input, so an adapter below it silently stops learning. Before a forward that
needs gradients, the tuner puts such weights back in the standard format (nothing to do otherwise).
"""

from __future__ import annotations

from torch import nn

from .compat import unpack_cpu_4bit_weight

__all__ = ["four_bit_modules", "unpack_for_training"]


def four_bit_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "Linear4bit"]


def unpack_for_training(modules: list[nn.Module]) -> None:
    """Undo bitsandbytes' CPU inference packing of these ``Linear4bit`` weights, where it was applied."""
    for module in modules:
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = unpack_cpu_4bit_weight(module.weight.data, state)
