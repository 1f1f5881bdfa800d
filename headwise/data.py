"""Training examples with answer-only labels, and the padding collator that batches them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["IGNORE_INDEX", "answer_only_example", "PaddingCollator"]

IGNORE_INDEX = -100  # labels with this value carry no loss (transformers' convention)


def answer_only_example(prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> dict[str, list[int]]:
    """``input_ids`` = prompt + answer; ``labels`` mask the prompt so only answer tokens carry loss."""
    if not answer_ids:
        raise ValueError("the answer has no tokens: nothing to train on")
    prompt_ids, answer_ids = list(prompt_ids), list(answer_ids)
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


@dataclass
class PaddingCollator:
    """Pads ``input_ids`` (and ``labels``) of a list of examples; makes ``attention_mask``.

    Left padding suits generation and last-token scoring; right padding suits training.
    """

    pad_token_id: int
    padding_side: str = "right"

    def __post_init__(self):
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        has_labels = all("labels" in f for f in features)
        batch = {"input_ids": [], "attention_mask": []}
        if has_labels:
            batch["labels"] = []
        for feature in features:
            ids = list(feature["input_ids"])
            pad = width - len(ids)
            rows = {"input_ids": (ids, self.pad_token_id), "attention_mask": ([1] * len(ids), 0)}
            if has_labels:
                rows["labels"] = (list(feature["labels"]), IGNORE_INDEX)
            for key, (values, fill) in rows.items():
                padding = [fill] * pad
                batch[key].append(padding + values if self.padding_side == "left" else values + padding)
        return {key: torch.tensor(values, dtype=torch.long) for key, values in batch.items()}


QA_TEMPLATE = "Q: {input}\nA:"


def encode_pair(tokenizer, prompt: str, answer: str) -> dict[str, list[int]]:
    """Token ids of ``prompt`` + ``" " + answer`` with answer-only labels.

    The answer's ids are what the tokenizer gives it as a continuation of the prompt, so they match
    what the model generates after the prompt.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + " " + answer, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(f"the tokenizer merges the prompt's end with the answer: {prompt!r} + {answer!r}")
    return answer_only_example(prompt_ids, full_ids[len(prompt_ids):])
