"""Head sets: lists of (layer, head) pairs, checked against a model's shape."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

__all__ = ["HeadList", "resolve_heads", "group_by_layer"]

HeadList = list[tuple[int, int]]


def resolve_heads(
    heads: str | Iterable[Sequence[int]], num_layers: int, num_heads: int, layers: Iterable[int] | None = None
) -> HeadList:
    """Sorted unique (layer, head) pairs; 'all' expands to every head (of ``layers`` if given).

    Raises ``IndexError`` naming the valid range for a head or layer outside the model.
    """
    if heads == "all":
        chosen_layers = range(num_layers) if layers is None else sorted(set(layers))
        pairs = [(layer, head) for layer in chosen_layers for head in range(num_heads)]
    else:
        pairs = sorted({(int(layer), int(head)) for layer, head in heads})
        if not pairs:
            raise ValueError("heads is empty: name at least one (layer, head) pair, or 'all'")
    for layer, head in pairs:
        if not 0 <= layer < num_layers:
            raise IndexError(f"head ({layer}, {head}): layer {layer} is out of range; the model has layers 0..{num_layers - 1}")
        if not 0 <= head < num_heads:
            raise IndexError(f"head ({layer}, {head}): head {head} is out of range; each layer has heads 0..{num_heads - 1}")
    return pairs


def group_by_layer(heads: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """{layer: sorted head indices}."""
    grouped: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        grouped[layer].append(head)
    return {layer: sorted(hs) for layer, hs in sorted(grouped.items())}
