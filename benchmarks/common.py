"""Shared benchmark helpers: the machine line, markdown tables, mean [min–max] over seeds."""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path
from typing import Callable

import torch

# The benchmarks read the reference data beside the checkout (an installed headwise never guesses it).
REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if REFERENCE_DATA.is_dir():
    os.environ.setdefault("HEADWISE_DATA", str(REFERENCE_DATA))

def apply_quick(args, quick: dict):
    """With ``--quick``: the benchmark's small settings (named in its --help), so a run takes minutes."""
    if getattr(args, "quick", False):
        for name, value in quick.items():
            setattr(args, name, value)
    return args


def quick_help(quick: dict) -> str:
    """The --quick help text, naming the settings (escaped for argparse's %-formatting)."""
    return ("minutes, not hours: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in quick.items())).replace("%", "%%")


RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def publish(title: str, settings: str, table: str, args, footer: str = "", **figures) -> None:
    """Print a benchmark's report (``# title``, its settings, the table); with ``--json`` write ``figures``;
    with ``--append`` add it to RESULTS.md as a dated section with the command and the machine."""
    import sys
    import time

    body = f"{settings}\n\n{table}" + (f"\n\n{footer}" if footer else "")
    print(f"\n# {title} ({machine()})\n\n{body}")
    if getattr(args, "json", None):
        write_json(args.json, **figures)
    if getattr(args, "append", False):
        with RESULTS.open("a") as handle:
            handle.write(f"\n## {title} ({time.strftime('%Y-%m-%d')})\n\nCommand: `python {' '.join(sys.argv)}`  \n"
                         f"Machine: {machine()}  \n{body}\n")


def write_json(path: Path, **payload) -> None:
    """The figures of a run as JSON, with the command and the machine, for tools to read."""
    import json
    import sys

    payload = {"command": "python " + " ".join(sys.argv), "machine": machine(), **payload}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1, default=str))


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


def interleaved_ratios(runs: dict[str, Callable[[], float]], reference: str, repeats: int, seed: int = 0,
                       warmup: int = 2) -> dict[str, list[float]]:
    """Time every run once per round in a shuffled order (after ``warmup`` calls each); per round, each
    run's time over ``reference``'s time in the same round. A run returns its own elapsed seconds."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    rng = random.Random(seed)
    ratios = {name: [] for name in runs if name != reference}
    for _ in range(repeats):
        order = list(runs)
        rng.shuffle(order)
        times = {name: runs[name]() for name in order}
        for name in ratios:
            ratios[name].append(times[name] / times[reference])
    return ratios


def median(values) -> float:
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def bootstrap_median(values, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the median."""
    rng = random.Random(seed)
    medians = sorted(median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws)]
