"""Head sets: lists of (layer, head) pairs, checked against a model's shape."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

__all__ = ["HeadList", "group_by_layer", "head_count", "resolve_heads", "top_k_heads"]

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


def head_count(k: int | float, num_layers: int, num_heads: int) -> int:
    """``k`` as a number of heads: an int is a count, a float in (0, 1) a fraction of all heads."""
    total = num_layers * num_heads
    if isinstance(k, float) and 0 < k < 1:
        return max(1, round(k * total))
    if isinstance(k, int) and 0 < k <= total:
        return k
    raise ValueError(f"k must be a count in 1..{total} or a fraction in (0, 1), got {k!r}")


def top_k_heads(scores, k: int | float) -> HeadList:
    """The ``k`` highest-scoring heads of an (L, H) score matrix, ranked globally across layers,
    best first (ties broken by (layer, head))."""
    num_layers, num_heads = scores.shape
    count = head_count(k, num_layers, num_heads)
    flat = [(-float(scores[layer, head]), layer, head) for layer in range(num_layers) for head in range(num_heads)]
    return [(layer, head) for _, layer, head in sorted(flat)[:count]]
