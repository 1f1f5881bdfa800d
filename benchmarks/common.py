"""Shared benchmark helpers: the machine line, markdown tables, mean [min–max] over seeds."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# The benchmarks read the reference data beside the checkout (an installed headwise never guesses it).
REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if REFERENCE_DATA.is_dir():
    os.environ.setdefault("HEADWISE_DATA", str(REFERENCE_DATA))

def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_spread(values, digits: int = 2) -> str:
    """``mean [min–max]`` of per-seed values (a single value is marked as one draw)."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def seed_note(seeds) -> str:
    return f"Mean [min–max] over seeds {', '.join(map(str, seeds))} (each seed draws the split, the initialisation and the batch order)."


PLOTS = Path(__file__).resolve().parent / "plots"


def pyplot():
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, name: str) -> Path:
    """Save ``fig`` as benchmarks/plots/<name> and close it."""
    fig.tight_layout()
    PLOTS.mkdir(exist_ok=True)
    path = PLOTS / name
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path
