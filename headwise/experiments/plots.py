"""A layers x heads heatmap of any per-head score matrix, with chosen heads marked."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["PLOT_EXTRA", "plot_head_scores", "pyplot"]

PLOT_EXTRA = 'pip install "headwise[plot]"'


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend. Every headwise picture imports matplotlib here: it
    is an optional extra, so without it this raises a ``ModuleNotFoundError`` that names the fix."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ModuleNotFoundError(
            f"headwise's pictures need matplotlib, an optional extra ({error}): {PLOT_EXTRA}", name="matplotlib",
        ) from None
    return plt


def plot_head_scores(
    scores, path: str | Path, selected: Iterable[tuple[int, int]] = (), title: str = "", label: str = "score",
    rows: Sequence[str] | None = None, diverging: bool = False,
) -> Path:
    """Save an (L, H) matrix as a heatmap PNG (layers on the y axis); ``selected`` heads get a box.
    ``rows`` names the rows instead of layer numbers (e.g. ["all layers"] for a per-head-index score);
    ``diverging`` centres a red-blue colour scale on zero (for signed scores such as attributions).
    Needs matplotlib (``pip install "headwise[plot]"``); without it, a ``ModuleNotFoundError`` saying so."""
    plt = pyplot()
    from matplotlib.patches import Rectangle

    data = scores.detach().float().cpu().numpy() if hasattr(scores, "detach") else scores
    num_layers, num_heads = data.shape
    if rows is not None and len(rows) != num_layers:
        raise ValueError(f"rows names {len(rows)} rows but the scores have {num_layers}")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * num_heads + 2), max(3.0, 0.22 * num_layers + 1.5)))
    if diverging:
        limit = float(abs(data).max()) or 1.0
        image = ax.imshow(data, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
    else:
        image = ax.imshow(data, aspect="auto", origin="lower", cmap="viridis")
    for layer, head in selected:
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_xlabel("head")
    ax.set_xticks(range(num_heads))
    row_ticks = list(range(0, num_layers, max(1, num_layers // 15)))
    ax.set_yticks(row_ticks)
    ax.set_yticklabels([rows[i] for i in row_ticks] if rows is not None else row_ticks)
    ax.set_ylabel("layer" if rows is None else "")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
