"""Held-out accuracy: first-token accuracy and greedy exact match, batched with left padding."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch

from .data import IGNORE_INDEX, encode_pair, left_padded_batch
from ..progress import progress

__all__ = [
    "first_token_accuracy", "greedy_exact_match", "label_word_ids", "label_variants", "label_logprobs", "label_constrained_accuracy",
    "generated_label_accuracy", "label_accuracy", "LabelAccuracy", "first_token_hits", "greedy_answers",
    "is_exact_match", "label_predictions", "generated_label",
]


def first_answer_token(tokenizer, prompt: str, answer: str) -> int:
    """Id of the answer's first token as it follows the prompt."""
    example = encode_pair(tokenizer, prompt, answer)
    return example["input_ids"][example["labels"].count(IGNORE_INDEX)]


def _check_pairs(prompts: Sequence, targets: Sequence, what: str) -> None:
    """Prompts and their answers / labels must pair up one to one (zip would silently drop the rest)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} {what}: give one per prompt")
    if not prompts:
        raise ValueError("no prompts to evaluate: give at least one")


def _batches(items: Sequence, size: int, desc: str):
    for start in progress(range(0, len(items), size), desc):
        yield start, items[start:start + size]


@torch.no_grad()
def first_token_hits(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16) -> list[bool]:
    """Per item: is the argmax next token after the prompt the answer's first token?"""
    _check_pairs(prompts, answers, "answers")
    device = next(model.parameters()).device
    targets = [first_answer_token(tokenizer, p, a) for p, a in zip(prompts, answers)]
    hits = []
    for start, chunk in _batches(prompts, batch_size, "first-token accuracy"):
        logits = model(**left_padded_batch(tokenizer, chunk, device), logits_to_keep=1).logits[:, -1]
        predicted = logits.argmax(-1).tolist()
        hits += [p == t for p, t in zip(predicted, targets[start:start + len(chunk)])]
    return hits


def first_token_accuracy(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16) -> float:
    """Share of items whose argmax next token after the prompt is the answer's first token."""
    hits = first_token_hits(model, tokenizer, prompts, answers, batch_size)
    return sum(hits) / len(hits)


def _normalise(text: str) -> str:
    return " ".join(text.strip().split()).lower()


@torch.no_grad()
def greedy_exact_match(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16, max_new_tokens: int = 8
) -> float:
    """Share of items whose greedy continuation, up to its first newline, equals the answer (case-insensitive)."""
    _check_pairs(prompts, answers, "answers")
    texts = greedy_answers(model, tokenizer, prompts, batch_size, max_new_tokens)
    return sum(is_exact_match(text, answer) for text, answer in zip(texts, answers)) / len(prompts)


def is_exact_match(text: str, answer: str) -> bool:
    """The greedy answer equals the expected one, ignoring case and spacing."""
    return _normalise(text) == _normalise(answer)


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: Sequence[str], batch_size: int = 16, max_new_tokens: int = 8) -> list[str]:
    """Each prompt's greedy continuation up to its first newline."""
    if not prompts:
        raise ValueError("no prompts to evaluate: give at least one")
    device = next(model.parameters()).device
    answers = []
    for _, chunk in _batches(list(prompts), batch_size, "greedy answers"):
        batch = left_padded_batch(tokenizer, chunk, device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        answers += [text.split("\n")[0].strip() for text in texts]
    return answers


def label_word_ids(tokenizer, label_words: Sequence[str]) -> list[int]:
    """First token id of each label word as it follows a prompt (with a leading space).

    Scores a single surface form; :func:`label_logprobs` scores every form a model may write.
    """
    ids = [tokenizer(" " + word, add_special_tokens=False)["input_ids"][0] for word in label_words]
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words {list(label_words)} share a first token; choose distinguishable words")
    return ids


def label_variants(tokenizer, label_words: Sequence[str]) -> list[list[tuple[int, ...]]]:
    """Per label, the token ids of each surface form a model may write after a prompt: with and without a
    leading space, as given, lower-case and capitalised (duplicates dropped). A form two labels share
    is an error: it could not tell them apart."""
    variants, owner, unknown = [], {}, tokenizer.unk_token_id
    for index, word in enumerate(label_words):
        word = word.strip()
        if not word:
            raise ValueError(f"label word {index} is empty; give every label a word")
        forms = []
        for surface in dict.fromkeys((word, word.lower(), word[:1].upper() + word[1:])):
            for text in (" " + surface, surface):
                ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
                if ids and unknown not in ids and ids not in forms:  # a form with <unk> is not one the model writes
                    forms.append(ids)
                    if owner.setdefault(ids, index) != index:
                        raise ValueError(
                            f"label words {label_words[owner[ids]]!r} and {word!r} share the surface form "
                            f"{tokenizer.decode(list(ids))!r}; choose words that differ beyond case and spacing"
                        )
        if not forms:
            raise ValueError(f"label word {word!r} has no tokenization without the unknown token; use words in the vocabulary")
        variants.append(forms)
    return variants


def _variant_logprobs(model, batch: dict, first_logp: torch.Tensor, variants, cache=None) -> torch.Tensor:
    """(B, C) log P(label) = logsumexp over the label's surface forms of each form's full log-probability.

    ``first_logp`` (B, V) is the next-token log-softmax after each prompt; one-token forms are read from
    it. Longer forms are decoded on from the prompt's KV cache (``cache``, or one more prompt pass), as
    generation would, so prefill-only adapters see the prompt exactly as when it is scored."""
    rows = len(first_logp)
    long_forms = [ids for forms in variants for ids in forms if len(ids) > 1]
    if long_forms and cache is None:
        cache = model(**batch, use_cache=True, logits_to_keep=1).cache
    columns = []
    for forms in variants:
        scores = []
        for ids in forms:
            score = first_logp[:, ids[0]]
            if len(ids) > 1:
                rest = torch.tensor(ids[1:], device=first_logp.device).expand(rows, -1)  # (B, n-1)
                mask = torch.cat([batch["attention_mask"], batch["attention_mask"].new_ones(rows, len(ids) - 1)], dim=1)
                feed = torch.tensor(ids[:-1], device=first_logp.device).expand(rows, -1)
                logits = model(input_ids=feed, attention_mask=mask, cache=copy.deepcopy(cache), use_cache=True).logits
                score = score + logits.float().log_softmax(-1).gather(-1, rest[..., None]).sum((1, 2))
            scores.append(score)
        columns.append(torch.stack(scores, -1).logsumexp(-1))
    return torch.stack(columns, -1)


@torch.no_grad()
def label_logprobs(model, tokenizer, prompts: Sequence[str], label_words: Sequence[str], batch_size: int = 8) -> torch.Tensor:
    """(N, C) log-probability that each prompt continues with each label word, in any of its surface
    forms (:func:`label_variants`; multi-token forms by their full log-probability)."""
    device = next(model.parameters()).device
    variants = label_variants(tokenizer, label_words)
    out = []
    for _, chunk in _batches(list(prompts), batch_size, "label scoring"):
        batch = left_padded_batch(tokenizer, chunk, device)
        multi = any(len(ids) > 1 for forms in variants for ids in forms)
        out_ = model(**batch, use_cache=multi, logits_to_keep=1)
        first_logp = out_.logits[:, -1].float().log_softmax(-1)
        out.append(_variant_logprobs(model, batch, first_logp, variants, out_.cache if multi else None).cpu())
    return torch.cat(out)


def label_constrained_accuracy(model, tokenizer, prompts, labels: Sequence[int], label_words, batch_size: int = 8) -> float:
    """Accuracy of the argmax over the label words' probabilities (a wrong format cannot cost anything)."""
    _check_pairs(prompts, labels, "labels")
    predicted = label_logprobs(model, tokenizer, prompts, label_words, batch_size).argmax(-1)
    return (predicted == torch.tensor(list(labels))).float().mean().item()


@dataclass
class LabelAccuracy:
    """Accuracy of one classification run, scored two ways from the same forward passes."""

    constrained: float  # argmax over the label words' probabilities, every surface form counted
    generated: float  # the first word of the free greedy continuation names the right label
    not_a_label: float  # share of greedy continuations whose first word is no label word


def _first_word(text: str) -> str:
    return (text.strip().split() or [""])[0].strip(".,:;!?\"'").lower()


@torch.no_grad()
def label_predictions(
    model, tokenizer, prompts, label_words, batch_size: int = 8, max_new_tokens: int = 3
) -> tuple[list[int], list[str]]:
    """Per prompt, the label-constrained choice (class index) and the free greedy continuation, from one
    ``generate`` per batch: the logits of its first step are the constrained scores (the prompt is encoded once)."""
    device = next(model.parameters()).device
    variants = label_variants(tokenizer, label_words)
    choices, texts = [], []
    for _, chunk in _batches(list(prompts), batch_size, "label accuracy"):
        batch = left_padded_batch(tokenizer, chunk, device)
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            output_logits=True, return_dict_in_generate=True,
        )
        first_logp = out.logits[0].float().log_softmax(-1)
        choices += _variant_logprobs(model, batch, first_logp, variants).argmax(-1).tolist()
        texts += tokenizer.batch_decode(out.sequences[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return choices, texts


def generated_label(text: str, label_words) -> int | None:
    """The class whose label word the free continuation starts with (None: no label word)."""
    words, first = [w.strip().lower() for w in label_words], _first_word(text)
    return words.index(first) if first in words else None


def label_accuracy(
    model, tokenizer, prompts, labels: Sequence[int], label_words, batch_size: int = 8, max_new_tokens: int = 3
) -> LabelAccuracy:
    """Label-constrained and free-generation accuracy (see :func:`label_predictions`)."""
    _check_pairs(prompts, labels, "labels")
    choices, texts = label_predictions(model, tokenizer, prompts, label_words, batch_size, max_new_tokens)
    generated = [generated_label(text, label_words) for text in texts]
    n = len(prompts)
    return LabelAccuracy(
        sum(c == label for c, label in zip(choices, labels)) / n,
        sum(g == label for g, label in zip(generated, labels)) / n,
        sum(g is None for g in generated) / n,
    )


def generated_label_accuracy(
    model, tokenizer, prompts, labels: Sequence[int], label_words, batch_size: int = 8, max_new_tokens: int = 3
) -> tuple[float, float]:
    """Free greedy generation: (accuracy, share of outputs whose first word is no label word)."""
    result = label_accuracy(model, tokenizer, prompts, labels, label_words, batch_size, max_new_tokens)
    return result.generated, result.not_a_label
