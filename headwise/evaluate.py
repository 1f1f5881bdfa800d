"""Held-out accuracy: first-token accuracy and greedy exact match, batched with left padding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .data import IGNORE_INDEX, encode_pair, left_padded_batch

__all__ = [
    "first_token_accuracy", "greedy_exact_match", "label_word_ids", "label_logprobs", "label_constrained_accuracy",
    "generated_label_accuracy", "label_accuracy", "LabelAccuracy",
]


def first_answer_token(tokenizer, prompt: str, answer: str) -> int:
    """Id of the answer's first token as it follows the prompt."""
    example = encode_pair(tokenizer, prompt, answer)
    return example["input_ids"][example["labels"].count(IGNORE_INDEX)]


def _batches(items: Sequence, size: int, desc: str):
    for start in tqdm(range(0, len(items), size), desc=desc, leave=False):
        yield start, items[start:start + size]


@torch.no_grad()
def first_token_accuracy(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16) -> float:
    """Share of items whose argmax next token after the prompt is the answer's first token."""
    device = next(model.parameters()).device
    targets = [first_answer_token(tokenizer, p, a) for p, a in zip(prompts, answers)]
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


def label_word_ids(tokenizer, label_words: Sequence[str]) -> list[int]:
    """First token id of each label word as it follows a prompt (with a leading space)."""
    ids = [tokenizer(" " + word, add_special_tokens=False)["input_ids"][0] for word in label_words]
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words {list(label_words)} share a first token; choose distinguishable words")
    return ids


@torch.no_grad()
def label_logprobs(model, tokenizer, prompts: Sequence[str], label_words: Sequence[str], batch_size: int = 8) -> torch.Tensor:
    """(N, C) log-probabilities of each label word's first token after each prompt (full-vocabulary softmax)."""
    device = next(model.parameters()).device
    ids = label_word_ids(tokenizer, label_words)
    out = []
    for _, chunk in _batches(list(prompts), batch_size, "label scoring"):
        logits = model(**left_padded_batch(tokenizer, chunk, device), logits_to_keep=1).logits[:, -1].float()
        out.append(logits.log_softmax(-1)[:, ids].cpu())
    return torch.cat(out)


def label_constrained_accuracy(model, tokenizer, prompts, labels: Sequence[int], label_words, batch_size: int = 8) -> float:
    """Accuracy of the argmax over the label words (a wrong format cannot cost anything)."""
    predicted = label_logprobs(model, tokenizer, prompts, label_words, batch_size).argmax(-1)
    return (predicted == torch.tensor(list(labels))).float().mean().item()


@dataclass
class LabelAccuracy:
    """Accuracy of one classification run, scored two ways from the same forward passes."""

    constrained: float  # argmax over the label words' first tokens (a wrong format cannot cost anything)
    generated: float  # the first word of the free greedy continuation names the right label
    not_a_label: float  # share of greedy continuations whose first word is no label word


def _first_word(text: str) -> str:
    return (text.strip().split() or [""])[0].strip(".,:;!?\"'").lower()


@torch.no_grad()
def label_accuracy(
    model, tokenizer, prompts, labels: Sequence[int], label_words, batch_size: int = 8, max_new_tokens: int = 3
) -> LabelAccuracy:
    """Label-constrained and free-generation accuracy from one greedy ``generate`` per batch: the logits of
    its first step are the label-constrained scores, so the prompt is encoded once for both."""
    device = next(model.parameters()).device
    ids, words = label_word_ids(tokenizer, label_words), [w.lower() for w in label_words]
    constrained = generated = invalid = 0
    for start, chunk in _batches(list(prompts), batch_size, "label accuracy"):
        batch = left_padded_batch(tokenizer, chunk, device)
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            output_logits=True, return_dict_in_generate=True,
        )
        scored = out.logits[0][:, ids].argmax(-1).tolist()
        texts = tokenizer.batch_decode(out.sequences[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for text, choice, label in zip(texts, scored, labels[start:start + len(chunk)]):
            first = _first_word(text)
            constrained += choice == label
            invalid += first not in words
            generated += first in words and words.index(first) == label
    n = max(len(prompts), 1)
    return LabelAccuracy(constrained / n, generated / n, invalid / n)


def generated_label_accuracy(
    model, tokenizer, prompts, labels: Sequence[int], label_words, batch_size: int = 8, max_new_tokens: int = 3
) -> tuple[float, float]:
    """Free greedy generation: (accuracy, share of outputs whose first word is no label word)."""
    result = label_accuracy(model, tokenizer, prompts, labels, label_words, batch_size, max_new_tokens)
    return result.generated, result.not_a_label
