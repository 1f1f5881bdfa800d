"""A plain ``transformers.Trainer`` run with LoFiT's reference schedule, for the library's own loops.

AdamW, linear decay, no warmup, weight decay 0, gradient clipping 1.0; with an ``eval_dataset`` the
validation loss is measured before training and after every epoch, and the adapter weights of the best
check are kept (early stopping that cannot end worse than it started). Nothing here is needed to
train a headwise model: any Trainer or Accelerate loop works on the wrapped model as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from typing import Any

import torch
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainingArguments

from .._peft_defaults import upstream_deprecations_silenced
from ..progress import progress_bar
from .data import PaddingCollator, check_columns
from .sources import DataSourceError

__all__ = [
    "KeepBestAdapter", "LossRecorder", "TrainingProgress", "check_training_kwargs", "check_training_rows", "pad_token_id_of", "reference_training_args",
    "split_for_validation", "train", "validation_size",
]

logger = logging.getLogger(__name__)

TRAINING_COLUMNS = ("input_ids", "labels")
_HOW_TO_BUILD = "e.g. headwise.experiments.data.training_set(tokenizer, pairs) on a non-empty list of {'input', 'output'} pairs"


def check_training_rows(dataset, what: str = "train_dataset", columns=TRAINING_COLUMNS) -> None:
    """Raise a ``ValueError`` that says what to pass for an empty data set, or one whose rows lack ``columns``
    (a ``datasets.Dataset`` or a list of dicts; a data set without a length, e.g. an ``IterableDataset``,
    is not checked)."""
    listed = ", ".join(columns or TRAINING_COLUMNS)
    if dataset is None:
        raise ValueError(f"{what} is None: give rows of {listed}, {_HOW_TO_BUILD}")
    if isinstance(dataset, (str, bytes, dict)):
        raise TypeError(f"{what} must be a datasets.Dataset or a list of rows with {listed}, got {type(dataset).__name__}")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        return  # an iterable data set: Trainer checks it
    if len(dataset) == 0:
        raise ValueError(f"{what} is empty (0 rows): training needs at least one row of {listed}, {_HOW_TO_BUILD}")
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):  # a datasets.Dataset: its columns, without reading every row
        missing = [column for column in columns if column not in names]
        if missing:
            raise DataSourceError(
                f"{what} has no {missing[0]!r} column; it has {sorted(names)} and needs {listed}, {_HOW_TO_BUILD}"
            )
        return
    check_columns((dataset[i] for i in range(len(dataset))), columns, what)


def check_training_kwargs(kwargs: dict[str, Any]) -> None:
    """Extra keyword arguments of ``train`` go to ``transformers.TrainingArguments``: refuse a name it does not take
    before anything runs (instead of after a model was wrapped)."""
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    known |= {"pad_token_id", "data_collator", "eval_dataset", "epochs", "batch_size", "seed", "description", "callbacks"}  # train()'s own
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(
            f"unknown training argument {unknown[0]!r}: extra keyword arguments go to transformers.TrainingArguments "
            "(e.g. max_steps=, gradient_accumulation_steps=, eval_strategy=)"
        )


def reference_training_args(
    output_dir: str, learning_rate: float, epochs: float = 5, batch_size: int = 8, seed: int = 0, **overrides: Any
) -> TrainingArguments:
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir, learning_rate=learning_rate, num_train_epochs=epochs,
        per_device_train_batch_size=batch_size, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", seed=seed, data_seed=seed, save_strategy="no", report_to=[],
        logging_strategy="steps", logging_steps=1, remove_unused_columns=False, disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


class TrainingProgress(TrainerCallback):
    """One progress bar over the optimiser steps (count, rate, time left) with the latest training and
    validation loss, in place of the Trainer's printed metric dicts; ``headwise.progress`` turns it off."""

    def __init__(self, description: str) -> None:
        self.description, self.bar, self.losses = description, None, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = progress_bar(state.max_steps, self.description)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._show(loss=(logs or {}).get("loss"))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._show(valid=(metrics or {}).get("eval_loss"))

    def _show(self, **losses) -> None:
        self.losses.update({name: f"{value:.3f}" for name, value in losses.items() if value is not None})
        if self.bar is not None and self.losses:
            self.bar.set_postfix(self.losses, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LossRecorder(TrainerCallback):
    """Records a run's optimiser steps, epochs and losses, for a summary after it ends."""

    def __init__(self) -> None:
        self.steps, self.epochs, self.train_losses, self.eval_losses = 0, 0.0, [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.train_losses.append((state.global_step, float(logs["loss"])))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.eval_losses.append((state.global_step, float(metrics["eval_loss"])))

    def on_train_end(self, args, state, control, **kwargs):
        self.steps, self.epochs = state.global_step, float(state.epoch or 0)


class KeepBestAdapter(TrainerCallback):
    """Keeps a copy of the trainable parameters whenever the validation loss improves and puts the best
    copy back when training ends. ``record`` the loss of the starting point first."""

    def __init__(self, model) -> None:
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.best_loss, self.best_step, self.best = float("inf"), 0, None
        self.history: list[tuple[int, float]] = []

    def record(self, step: int, loss: float) -> None:
        self.history.append((step, loss))
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            self.best = {name: p.detach().clone() for name, p in self.params.items()}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self.record(state.global_step, metrics["eval_loss"])

    def on_train_end(self, args, state, control, **kwargs):
        if self.best is not None:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(self.best[name])
            logger.info("kept the adapter of step %d (validation loss %.4f)", self.best_step, self.best_loss)


def validation_size(num_rows: int, fraction: float) -> int:
    """Rows ``split_for_validation`` holds out of ``num_rows`` (at least one, and at least one left to train on)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"valid fraction must be in (0, 1), got {fraction!r}")
    n_valid = max(1, round(fraction * num_rows))
    if n_valid >= num_rows:
        raise ValueError(f"{num_rows} examples cannot spare {n_valid} for validation; pass more data or valid=0")
    return n_valid


def split_for_validation(dataset, fraction: float, seed: int = 0):
    """``(train, valid)``: a seeded random ``fraction`` of a ``datasets.Dataset`` held out (at least one row)."""
    n_valid = validation_size(len(dataset), fraction)
    parts = dataset.train_test_split(test_size=n_valid, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def train(
    model, train_dataset, learning_rate: float, pad_token_id: int | None = None, data_collator=None,
    eval_dataset=None, description: str = "training", callbacks=(), **args: Any,
):
    """Train ``model`` (a wrapped model: only its adapter is trainable) on ``train_dataset``.

    With ``eval_dataset`` the adapter of the best validation check (the start included) is kept;
    the returned ``TrainOutput.metrics`` then carry ``best_step`` and ``best_eval_loss``. Progress shows as one
    bar named ``description``; nothing is printed. ``callbacks``: more ``TrainerCallback`` objects (e.g. a
    :class:`LossRecorder`)."""
    columns = TRAINING_COLUMNS if data_collator is None else ()  # a collator of your own may make the labels
    check_training_rows(train_dataset, "train_dataset", columns)
    if eval_dataset is not None:
        check_training_rows(eval_dataset, "eval_dataset", columns)
    if data_collator is None:
        pad = pad_token_id if pad_token_id is not None else pad_token_id_of(model)
        data_collator = PaddingCollator(pad_token_id=pad)
    with tempfile.TemporaryDirectory() as folder, upstream_deprecations_silenced():
        if eval_dataset is not None:
            args.setdefault("eval_strategy", "epoch")
            args.setdefault("per_device_eval_batch_size", args.get("batch_size", 8))
        training_args = reference_training_args(args.pop("output_dir", folder), learning_rate, **args)
        trainer = Trainer(
            model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            data_collator=data_collator,
        )
        for printer in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(printer)
        for callback in (TrainingProgress(description), *callbacks):
            trainer.add_callback(callback)
        if eval_dataset is None:
            return trainer.train()
        keeper = KeepBestAdapter(model)
        keeper.record(0, trainer.evaluate()["eval_loss"])
        trainer.add_callback(keeper)
        output = trainer.train()
        output.metrics.update(best_step=keeper.best_step, best_eval_loss=keeper.best_loss, eval_history=keeper.history,
                              start_eval_loss=keeper.history[0][1])
        return output


def pad_token_id_of(model) -> int:
    """The model's pad token id (else its eos id, else 0): what padding collators need."""
    config = model.config
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, list):
            value = value[0]
        if value is not None:
            return int(value)
    return 0
