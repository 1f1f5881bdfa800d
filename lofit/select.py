"""LoFiT's two phases: choose heads by L1-regularised scaling, then train offsets on them.

Phase 1 trains a scale vector A on every head (base frozen) with loss + l1 * sum|A|, scores each head
by ||A||_2 and keeps the top k ranked across all layers. It runs at least ``min_steps`` optimiser steps
whatever the data size: after a handful of Adam steps every element has moved by about lr·steps and
||A|| ranks heads by the sign consistency of their gradient, not by what they do for the task.
Phase 2 starts again from the base model and trains offset vectors v on the chosen heads only, in
units of each head's output RMS (``lofit.units``), keeping the adapter of the best validation check.
Both phases are plain ``transformers.Trainer`` runs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

import headwise
from headwise.experiments.training import (
    check_training_kwargs, check_training_rows, pad_token_id_of, split_for_validation, train, validation_size,
)
from headwise.heads import HeadList, head_count, top_k_heads
from headwise.model import check_adapter_name
from headwise.sites import find_head_sites
from headwise.transaction import check_count, check_positive, restored_after, unchanged_on_error

from .config import LofitConfig
from .units import offset_units_from_data, set_offset_units

__all__ = ["HeadSelection", "select_heads", "train_offsets", "fit"]

logger = logging.getLogger(__name__)
_SELECTION_ADAPTER = "lofit_selection"


@dataclass
class HeadSelection:
    """The chosen heads (best first) and the (L, H) matrix of ||A||_2 they were ranked by."""

    heads: HeadList
    scores: torch.Tensor

    def plot(self, path: str | Path, title: str = "LoFiT head scores ||A||") -> Path:
        from headwise.experiments.plots import plot_head_scores

        return plot_head_scores(self.scores, path, selected=self.heads, title=title, label="||A||_2")


def scale_norms(model, adapter_name: str) -> torch.Tensor:
    """(L, H) matrix of ||A||_2 read from a model wrapped with ``use_scale=True``."""
    if adapter_name not in getattr(model, "peft_config", {}) or not model.peft_config[adapter_name].use_scale:
        raise ValueError(f"no LoFiT scale vectors named {adapter_name!r} in this model")
    return model.base_model.read_heads(adapter_name, lambda holder: holder.lofit_scale[adapter_name].norm(dim=-1))


def _check_training(train_dataset, lr: float, epochs, batch_size: int, seed: int, training_args: dict, columns) -> None:
    """The arguments of a training phase, checked before anything is wrapped or run."""
    check_positive("lr", lr)
    check_count("seed", seed, minimum=0)
    if epochs is not None:
        check_positive("epochs", epochs)
    check_count("batch_size", batch_size)
    check_training_kwargs(training_args)
    check_training_rows(train_dataset, "train_dataset", columns)
    if training_args.get("eval_dataset") is not None:
        check_training_rows(training_args["eval_dataset"], "eval_dataset", columns)


def _columns(training_args: dict) -> tuple[str, ...]:
    """Columns every row needs: ``input_ids`` (and ``labels`` unless a data collator of yours makes them)."""
    return ("input_ids",) if training_args.get("data_collator") is not None else ("input_ids", "labels")


def _check_bare(model, what: str) -> None:
    if hasattr(model, "peft_config"):
        raise ValueError(f"{what} takes the bare base model: unload() its adapters first")


def select_heads(
    model, train_dataset, k: int | float = 0.03, l1: float = 1e-3, lr: float = 5e-3, epochs: float | None = None,
    batch_size: int = 8, seed: int = 0, min_steps: int = 40, **training_args,
) -> HeadSelection:
    """Phase 1 on a bare transformers model; the model is returned to its original state afterwards
    (trainable flags, train / eval mode and config included), whether training ends or fails.

    ``k``: number of heads, or a fraction of all heads (0.03 = the paper's small setting).
    ``train_dataset``: rows of input_ids / labels (answer-only), e.g. ``headwise.experiments.data.training_set``.
    ``epochs``: default enough epochs for ``min_steps`` optimiser steps (at least one epoch).
    Every argument is checked before training starts.
    """
    _check_bare(model, "select_heads")
    sites = find_head_sites(model)
    head_count(k, len(sites), sites[0].num_heads)  # k is checked now, not after the training run
    check_positive("l1", l1, allow_zero=True)
    check_count("min_steps", min_steps, minimum=0)
    _check_training(train_dataset, lr, epochs, batch_size, seed, training_args, _columns(training_args))
    if epochs is None:
        epochs = max(1, math.ceil(min_steps / max(1, math.ceil(len(train_dataset) / batch_size))))
    config = LofitConfig(heads="all", use_scale=True, use_offset=False, l1_lambda=l1)
    with restored_after(model):  # the temporary adapter goes, and so do its frozen flags, train mode, use_cache
        set_seed(seed)
        wrapped = headwise.wrap(model, config, adapter_name=_SELECTION_ADAPTER)
        try:
            train(wrapped, train_dataset, lr, epochs=epochs, batch_size=batch_size, seed=seed,
                  description="LoFiT phase 1: head selection", **training_args)
            scores = scale_norms(wrapped, _SELECTION_ADAPTER)
        finally:
            wrapped.unload()
    heads = top_k_heads(scores, k)
    logger.info("selected %d heads; top: %s", len(heads), heads[:5])
    return HeadSelection(heads=heads, scores=scores)


def _check_offsets(
    model, heads, train_dataset, lr: float = 0.2, epochs: float = 5, batch_size: int = 8, seed: int = 0,
    adapter_name: str = "default", relative: bool = True, valid: float = 0.2, eval_dataset=None,
    use_scale: bool = False, **training_args,
) -> LofitConfig | None:
    """Every check of ``train_offsets`` (``heads`` None: not known yet, as in ``fit`` before phase 1);
    returns the adapter's config when the heads are known."""
    _check_bare(model, "train_offsets")
    check_adapter_name(adapter_name)
    _check_training(train_dataset, lr, epochs, batch_size, seed, training_args, _columns(training_args))
    if eval_dataset is not None:
        check_training_rows(eval_dataset, "eval_dataset", _columns(training_args))
    elif valid:
        if not hasattr(train_dataset, "train_test_split"):
            raise TypeError(
                f"valid={valid!r} holds out part of train_dataset, which needs a datasets.Dataset (got "
                f"{type(train_dataset).__name__}): pass datasets.Dataset.from_list(rows), eval_dataset=, or valid=0"
            )
        validation_size(len(train_dataset), valid)
    if heads is None:
        return None
    config = LofitConfig(heads=heads if isinstance(heads, str) else list(heads), use_scale=use_scale)
    sites = find_head_sites(model, config.site_template)
    config.resolve_heads(len(sites), sites[0].num_heads)  # IndexError naming the model's range
    return config


def train_offsets(
    model, heads: HeadList, train_dataset, lr: float = 0.2, epochs: float = 5, batch_size: int = 8, seed: int = 0,
    adapter_name: str = "default", relative: bool = True, valid: float = 0.2, eval_dataset=None,
    use_scale: bool = False, **training_args,
):
    """Phase 2: wrap ``model`` with offsets on ``heads`` and train them; returns the wrapped model.

    ``relative``: train offsets in units of each head's output RMS on ``train_dataset`` (``lr`` is then a
    share of the head's scale per step); False trains the raw v, as the paper's code does.
    ``valid``: share of ``train_dataset`` held out to keep the best epoch (0 trains on everything and
    keeps the last); an ``eval_dataset`` is used instead when given.
    ``use_scale``: train the scale A of the same heads too (z <- (1 + A) z + v).
    Every argument is checked before the model is touched; if training fails, the model is left as it was.
    """
    config = _check_offsets(
        model, heads, train_dataset, lr, epochs, batch_size, seed, adapter_name, relative, valid, eval_dataset,
        use_scale, **training_args,
    )
    units = None
    if relative:
        units = offset_units_from_data(model, train_dataset, pad_token_id_of(model))
    if eval_dataset is None and valid:
        train_dataset, eval_dataset = split_for_validation(train_dataset, valid, seed)
    with unchanged_on_error(model):
        set_seed(seed)
        wrapped = headwise.wrap(model, config, adapter_name=adapter_name)
        if units is not None:
            set_offset_units(wrapped, units, adapter_name)
        train(wrapped, train_dataset, lr, epochs=epochs, batch_size=batch_size, seed=seed, eval_dataset=eval_dataset,
              description="LoFiT phase 2: offsets", **training_args)
    return wrapped


def fit(
    model, train_dataset, k: int | float = 0.03, l1: float = 1e-3, select_lr: float = 5e-3,
    select_epochs: float | None = None, offset_lr: float = 0.2, offset_epochs: float = 5, batch_size: int = 8,
    seed: int = 0, **offset_args,
):
    """Both phases: returns ``(wrapped_model, selection)``. The arguments of both are checked before phase 1."""
    _check_offsets(model, None, train_dataset, offset_lr, offset_epochs, batch_size, seed, **offset_args)
    selection = select_heads(model, train_dataset, k, l1=l1, lr=select_lr, epochs=select_epochs, batch_size=batch_size, seed=seed)
    wrapped = train_offsets(model, selection.heads, train_dataset, offset_lr, offset_epochs, batch_size, seed, **offset_args)
    return wrapped, selection
