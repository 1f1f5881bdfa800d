"""Held-out accuracy: first-token accuracy and greedy exact match, batched with left padding."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from .data import IGNORE_INDEX, encode_pair, left_padded_batch

__all__ = ["first_token_accuracy", "greedy_exact_match"]


def _first_answer_token(tokenizer, prompt: str, answer: str) -> int:
    example = encode_pair(tokenizer, prompt, answer)
    return example["input_ids"][example["labels"].count(IGNORE_INDEX)]


def _batches(items: Sequence, size: int, desc: str):
    for start in tqdm(range(0, len(items), size), desc=desc, leave=False):
        yield start, items[start:start + size]


@torch.no_grad()
def first_token_accuracy(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16) -> float:
    """Share of items whose argmax next token after the prompt is the answer's first token."""
    device = next(model.parameters()).device
    targets = [_first_answer_token(tokenizer, p, a) for p, a in zip(prompts, answers)]
    correct = 0
    for start, chunk in _batches(prompts, batch_size, "first-token accuracy"):
        logits = model(**left_padded_batch(tokenizer, chunk, device), logits_to_keep=1).logits[:, -1]
        predicted = logits.argmax(-1).tolist()
        correct += sum(p == t for p, t in zip(predicted, targets[start:start + len(chunk)]))
    return correct / max(len(prompts), 1)


def _normalise(text: str) -> str:
    return " ".join(text.strip().split()).lower()


@torch.no_grad()
def greedy_exact_match(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16, max_new_tokens: int = 8
) -> float:
    """Share of items whose greedy continuation, up to its first newline, equals the answer (case-insensitive)."""
    device = next(model.parameters()).device
    correct = 0
    for start, chunk in _batches(prompts, batch_size, "greedy exact match"):
        batch = left_padded_batch(tokenizer, chunk, device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for text, answer in zip(texts, answers[start:start + len(chunk)]):
            correct += _normalise(text.split("\n")[0]) == _normalise(answer)
    return correct / max(len(prompts), 1)
