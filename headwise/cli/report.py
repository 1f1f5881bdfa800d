"""What the command prints: short markdown tables and head names."""

from __future__ import annotations

from typing import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table (numbers as they are given: format them first)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def head_names(heads: Sequence[tuple[int, int]], limit: int = 8) -> str:
    """``L16.H1, L20.H3 ...`` (at most ``limit`` named)."""
    named = ", ".join(f"L{layer}.H{head}" for layer, head in heads[:limit])
    return named + (f" and {len(heads) - limit} more" if len(heads) > limit else "")


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
