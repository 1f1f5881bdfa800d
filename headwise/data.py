"""Task data: word-pair tasks split with a seed, prompt formats, answer-only labels, a padding collator."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

__all__ = [
    "IGNORE_INDEX", "QA_TEMPLATE", "WordPairTask", "PaddingCollator", "answer_only_example", "chat_prompt",
    "encode_pair", "few_shot_prompt", "left_padded_batch", "load_word_pairs", "shared_data_dir", "training_set",
]

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


def left_padded_batch(tokenizer, prompts: Sequence[str], device=None) -> dict[str, torch.Tensor]:
    """Tokenize prompts with left padding, so position -1 is every row's last prompt token."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    try:  # the caller's tokenizer is left as it was
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        batch = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None
    return {key: value.to(device) for key, value in batch.items()} if device is not None else dict(batch)


def few_shot_prompt(query: str, demonstrations: Sequence[dict] = (), template: str = QA_TEMPLATE) -> str:
    """``Q: x\nA: y\n\n ... Q: query\nA:``: the Function Vectors / soft-injection format."""
    shots = [template.format(input=d["input"]) + " " + d["output"] for d in demonstrations]
    return "\n\n".join([*shots, template.format(input=query)])


def chat_prompt(tokenizer, query: str, demonstrations: Sequence[dict] = (), template: str = QA_TEMPLATE) -> str:
    """The few-shot prompt as one user turn of the tokenizer's chat template, ready for the answer."""
    content = few_shot_prompt(query, demonstrations, template).removesuffix("A:").rstrip()
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def shared_data_dir() -> Path:
    """The reference data folder: ``$HEADWISE_DATA``, else ``../shared/data`` beside the project."""
    env = os.environ.get("HEADWISE_DATA")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[2] / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no reference data: set HEADWISE_DATA to the folder holding function_vectors/")


@dataclass
class WordPairTask:
    """A word-level task split into train / valid / test lists of {'input', 'output'}."""

    name: str
    train: list[dict]
    valid: list[dict]
    test: list[dict]


def _function_vectors_file(name: str) -> Path:
    root = shared_data_dir() / "function_vectors"
    for kind in ("abstractive", "extractive"):
        path = root / kind / f"{name}.json"
        if path.exists():
            return path
    known = sorted(p.stem for p in root.glob("*/*.json"))
    raise FileNotFoundError(f"no Function Vectors task {name!r}; known: {', '.join(known)}")


def load_word_pairs(
    source, valid: float | int = 0.15, test: float | int = 0.15, seed: int = 0, name: str | None = None
) -> WordPairTask:
    """Load word pairs and split them with ``seed``.

    ``source``: a Function Vectors task name ('antonym'), a JSON file of [{'input', 'output'}], or any
    iterable of such rows (a ``datasets.Dataset`` with input/output columns). Duplicate inputs are
    dropped so no input sits in two splits. ``valid`` / ``test``: a fraction or a count.
    """
    if isinstance(source, (str, Path)):
        path = Path(source) if str(source).endswith(".json") else _function_vectors_file(str(source))
        rows = json.loads(path.read_text(encoding="utf-8"))
        name = name or path.stem
    else:
        rows = list(source)
        name = name or "task"
    pairs, seen = [], set()
    for row in rows:
        if "input" not in row or "output" not in row:
            raise KeyError(f"each row needs 'input' and 'output' columns, got {sorted(row)}")
        key = str(row["input"]).strip()
        if key not in seen:
            seen.add(key)
            pairs.append({"input": key, "output": str(row["output"]).strip()})
    random.Random(seed).shuffle(pairs)
    n_valid = valid if isinstance(valid, int) else round(valid * len(pairs))
    n_test = test if isinstance(test, int) else round(test * len(pairs))
    if n_valid + n_test >= len(pairs):
        raise ValueError(f"{name}: {len(pairs)} pairs cannot give {n_valid} valid + {n_test} test and a train split")
    return WordPairTask(name, pairs[n_valid + n_test:], pairs[:n_valid], pairs[n_valid:n_valid + n_test])


def training_set(tokenizer, pairs: Iterable[dict], template: str = QA_TEMPLATE):
    """A ``datasets.Dataset`` of zero-shot prompts with answer-only labels, for ``Trainer``."""
    from datasets import Dataset

    rows = [encode_pair(tokenizer, few_shot_prompt(p["input"], template=template), p["output"]) for p in pairs]
    return Dataset.from_list(rows)
