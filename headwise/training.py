"""A plain ``transformers.Trainer`` run with LoFiT's reference schedule, for the library's own loops.

AdamW, linear decay, no warmup, weight decay 0, gradient clipping 1.0. Nothing here is needed to
train a headwise model: any Trainer or Accelerate loop works on the wrapped model as it is.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from .data import PaddingCollator

__all__ = ["reference_training_args", "train"]


def reference_training_args(
    output_dir: str, learning_rate: float, epochs: float = 5, batch_size: int = 8, seed: int = 0, **overrides: Any
) -> TrainingArguments:
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir, learning_rate=learning_rate, num_train_epochs=epochs,
        per_device_train_batch_size=batch_size, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", seed=seed, data_seed=seed, save_strategy="no", report_to=[],
        logging_strategy="no", remove_unused_columns=False, disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def train(model, train_dataset, learning_rate: float, pad_token_id: int | None = None, data_collator=None, **args: Any):
    """Train ``model`` (a wrapped model: only its adapter is trainable) on ``train_dataset``."""
    if data_collator is None:
        pad = pad_token_id if pad_token_id is not None else _pad_id(model)
        data_collator = PaddingCollator(pad_token_id=pad)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside PEFT
        training_args = reference_training_args(args.pop("output_dir", folder), learning_rate, **args)
        trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, data_collator=data_collator)
        return trainer.train()


def _pad_id(model) -> int:
    config = model.config
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, list):
            value = value[0]
        if value is not None:
            return int(value)
    return 0
