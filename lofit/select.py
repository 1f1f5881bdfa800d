"""LoFiT's two phases: choose heads by L1-regularised scaling, then train offsets on them.

Phase 1 trains a scale vector A on every head (base frozen) with loss + l1 * sum|A|, scores each head
by ||A||_2 and keeps the top k ranked across all layers. Phase 2 starts again from the base model and
trains offset vectors v on the chosen heads only. Both phases are plain ``transformers.Trainer`` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

import headwise
from headwise.heads import HeadList, top_k_heads
from headwise.training import train

from .adapter import LofitLayer
from .config import LofitConfig

__all__ = ["HeadSelection", "select_heads", "train_offsets", "fit"]

logger = logging.getLogger(__name__)
_SELECTION_ADAPTER = "lofit_selection"


@dataclass
class HeadSelection:
    """The chosen heads (best first) and the (L, H) matrix of ||A||_2 they were ranked by."""

    heads: HeadList
    scores: torch.Tensor

    def plot(self, path: str | Path, title: str = "LoFiT head scores ||A||") -> Path:
        from headwise.plots import plot_head_scores

        return plot_head_scores(self.scores, path, selected=self.heads, title=title, label="||A||_2")


def scale_norms(model, adapter_name: str) -> torch.Tensor:
    """(L, H) matrix of ||A||_2 read from a model wrapped with ``use_scale=True``."""
    holders = [m for m in model.modules() if isinstance(m, LofitLayer) and adapter_name in m.lofit_scale]
    if not holders:
        raise ValueError(f"no LoFiT scale vectors named {adapter_name!r} in this model")
    scores = torch.zeros(model.peft_config[adapter_name].num_layers, holders[0].num_heads)
    for holder in holders:
        norms = holder.lofit_scale[adapter_name].detach().float().norm(dim=-1).cpu()
        scores[holder.site.layer, holder.head_index[adapter_name].cpu()] = norms
    return scores


def select_heads(
    model, train_dataset, k: int | float = 0.03, l1: float = 1e-3, lr: float = 1e-3, epochs: float = 1,
    batch_size: int = 8, seed: int = 0, **training_args,
) -> HeadSelection:
    """Phase 1 on a bare transformers model; the model is returned to its original state afterwards.

    ``k``: number of heads, or a fraction of all heads (0.03 = the paper's small setting).
    ``train_dataset``: rows of input_ids / labels (answer-only), e.g. ``headwise.data.training_set``.
    """
    if hasattr(model, "peft_config"):
        raise ValueError("select_heads takes the bare base model: unload() its adapters first")
    set_seed(seed)
    config = LofitConfig(heads="all", use_scale=True, use_offset=False, l1_lambda=l1)
    wrapped = headwise.wrap(model, config, adapter_name=_SELECTION_ADAPTER)
    try:
        train(wrapped, train_dataset, lr, epochs=epochs, batch_size=batch_size, seed=seed, **training_args)
        scores = scale_norms(wrapped, _SELECTION_ADAPTER)
    finally:
        wrapped.unload()
    heads = top_k_heads(scores, k)
    logger.info("selected %d heads; top: %s", len(heads), heads[:5])
    return HeadSelection(heads=heads, scores=scores)


def train_offsets(
    model, heads: HeadList, train_dataset, lr: float = 1e-2, epochs: float = 5, batch_size: int = 8, seed: int = 0,
    adapter_name: str = "default", **training_args,
):
    """Phase 2: wrap ``model`` with offsets on ``heads`` and train them; returns the wrapped model."""
    set_seed(seed)
    wrapped = headwise.wrap(model, LofitConfig(heads=list(heads)), adapter_name=adapter_name)
    train(wrapped, train_dataset, lr, epochs=epochs, batch_size=batch_size, seed=seed, **training_args)
    return wrapped


def fit(
    model, train_dataset, k: int | float = 0.03, l1: float = 1e-3, select_lr: float = 1e-3, select_epochs: float = 1,
    offset_lr: float = 1e-2, offset_epochs: float = 5, batch_size: int = 8, seed: int = 0,
):
    """Both phases: returns ``(wrapped_model, selection)``."""
    selection = select_heads(model, train_dataset, k, l1=l1, lr=select_lr, epochs=select_epochs, batch_size=batch_size, seed=seed)
    wrapped = train_offsets(model, selection.heads, train_dataset, offset_lr, offset_epochs, batch_size, seed)
    return wrapped, selection
