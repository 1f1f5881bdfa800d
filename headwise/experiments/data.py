"""Task data: word-pair tasks split with a seed, prompt formats, answer-only labels, a padding collator."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from .sources import DATA_ENV, FILE_SUFFIXES, DataSourceError, data_folder, read_rows

__all__ = [
    "FUNCTION_VECTORS_TASKS", "IGNORE_INDEX", "QA_TEMPLATE", "WordPairTask", "PaddingCollator", "answer_only_example", "chat_prompt",
    "check_columns", "check_template", "encode_pair", "few_shot_prompt", "left_padded_batch", "load_word_pairs", "shared_data_dir",
    "training_set",
]

IGNORE_INDEX = -100  # labels with this value carry no loss (transformers' convention)


def check_columns(rows: Iterable, columns: Sequence[str], what: str = "rows", hint: str = "") -> None:
    """Raise :class:`DataSourceError` naming the first row that is not a mapping or lacks one of
    ``columns``, the column it lacks and the columns it has (instead of a bare ``KeyError``)."""
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataSourceError(
                f"{what}[{number}] is a {type(row).__name__}, not a row with named columns: give dicts with "
                f"{', '.join(map(repr, columns))}"
            )
        missing = [column for column in columns if column not in row]
        if missing:
            raise DataSourceError(
                f"{what}[{number}] has no {missing[0]!r} column; it has {sorted(map(str, row))} and every row needs "
                f"{', '.join(map(repr, columns))}{hint}"
            )


def check_template(template: str, fields: Sequence[str] = ("input",)) -> None:
    """Raise ``ValueError`` unless ``template`` is a format string whose placeholders are among ``fields``
    (literal braces doubled); the message names the placeholder nothing fills."""
    if not isinstance(template, str):
        raise TypeError(f"the prompt template must be a string, got {type(template).__name__}")
    try:
        template.format(**{field: "" for field in fields})
    except KeyError as error:
        raise ValueError(
            f"the template {template!r} names the placeholder {{{error.args[0]}}}, which nothing fills (it can use "
            f"{', '.join('{' + f + '}' for f in fields)}); write literal braces as '{{{{' and '}}}}'"
        ) from None
    except (AttributeError, IndexError, ValueError) as error:
        raise ValueError(
            f"the template {template!r} is not a valid format string ({error}); name its placeholders, e.g. "
            f"{'{' + fields[0] + '}'}, and write literal braces as '{{{{' and '}}}}'"
        ) from None


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
        if not features:
            raise ValueError("PaddingCollator got no rows to pad: give it a non-empty list of rows with 'input_ids'")
        check_columns(features, ("input_ids",), "features")
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
    demonstrations = list(demonstrations)
    check_columns(demonstrations, ("input", "output"), "demonstrations")
    check_template(template)
    shots = [template.format(input=d["input"]) + " " + d["output"] for d in demonstrations]
    return "\n\n".join([*shots, template.format(input=query)])


def chat_prompt(tokenizer, query: str, demonstrations: Sequence[dict] = (), template: str = QA_TEMPLATE) -> str:
    """The few-shot prompt as one user turn of the tokenizer's chat template, ready for the answer."""
    content = few_shot_prompt(query, demonstrations, template).removesuffix("A:").rstrip()
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def shared_data_dir(data_dir=None) -> Path:
    """The reference data folder (``data_dir``, else ``$HEADWISE_DATA``); see ``sources.data_folder``."""
    return data_folder(data_dir)


@dataclass
class WordPairTask:
    """A word-level task split into train / valid / test lists of {'input', 'output'}."""

    name: str
    train: list[dict]
    valid: list[dict]
    test: list[dict]


# The Function Vectors tasks (Todd et al., 2024), read from <data folder>/function_vectors/{kind}/{name}.json.
FUNCTION_VECTORS_TASKS = {
    "abstractive": (
        "ag_news", "antonym", "capitalize", "capitalize_first_letter", "capitalize_last_letter",
        "capitalize_second_letter", "commonsense_qa", "country-capital", "country-currency", "english-french",
        "english-spanish", "lowercase_first_letter", "lowercase_last_letter", "national_parks",
        "next_capital_letter", "next_item", "park-country", "person-occupation", "person-sport", "present-past",
        "prev_item", "sentiment", "word_length",
    ),
    "extractive": (
        "adjective_v_verb_3", "adjective_v_verb_5", "alphabetically_first_3", "alphabetically_first_5",
        "alphabetically_last_3", "alphabetically_last_5", "animal_v_object_3", "animal_v_object_5",
        "choose_first_of_3", "choose_first_of_5", "choose_last_of_3", "choose_last_of_5", "choose_middle_of_3",
        "color_v_animal_5", "concept_v_object_3", "concept_v_object_5", "conll2003_location", "conll2003_person",
        "fruit_v_animal_3", "object_v_concept_3", "object_v_concept_5",
    ),
}


def _function_vectors_file(name: str, data_dir=None) -> Path:
    root = data_folder(data_dir, needed_for=f"Function Vectors tasks such as {name!r}") / "function_vectors"
    for kind in ("abstractive", "extractive"):
        path = root / kind / f"{name}.json"
        if path.exists():
            return path
    known = sorted(p.stem for p in root.glob("*/*.json"))
    raise DataSourceError(
        f"no Function Vectors task {name!r} in {root}; known: {', '.join(known) or 'none (wrong folder?)'}; "
        "for a Hub dataset give its owner/name"
    )


def _word_pair_rows(source, data_dir, split: str) -> tuple[list[dict], str]:
    """Rows and a task name from any source ``load_word_pairs`` takes."""
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        path = Path(text).expanduser()
        is_task_name = not path.exists() and "/" not in text and path.suffix.lower() not in FILE_SUFFIXES
        known = any(text in names for names in FUNCTION_VECTORS_TASKS.values())
        if is_task_name and (known or data_dir is not None or os.environ.get(DATA_ENV)):
            return json.loads(_function_vectors_file(text, data_dir).read_text(encoding="utf-8")), text
        return read_rows(source, split=split), path.stem if path.exists() else text
    return read_rows(source, split=split), "task"


def load_word_pairs(
    source, valid: float | int = 0.15, test: float | int = 0.15, seed: int = 0, name: str | None = None,
    data_dir=None, input_column: str = "input", output_column: str = "output", split: str = "train",
) -> WordPairTask:
    """Load word pairs and split them with ``seed``.

    ``source``: a Function Vectors task name ('antonym', read from ``data_dir`` or ``$HEADWISE_DATA``),
    a JSON / JSONL / CSV file, a list of rows, a ``datasets.Dataset`` or a Hub dataset name
    (``split`` of it). Rows need ``input_column`` and ``output_column``. Duplicate inputs are dropped
    so no input sits in two splits. ``valid`` / ``test``: a fraction or a count.
    """
    rows, default_name = _word_pair_rows(source, data_dir, split)
    name = name or default_name
    pairs, seen = [], set()
    for row in rows:
        if input_column not in row or output_column not in row:
            raise DataSourceError(
                f"{name}: each row needs {input_column!r} and {output_column!r} columns, got {sorted(row)} "
                "(pass input_column= / output_column= to name yours)"
            )
        key = str(row[input_column]).strip()
        if key not in seen:
            seen.add(key)
            pairs.append({"input": key, "output": str(row[output_column]).strip()})
    random.Random(seed).shuffle(pairs)
    n_valid = valid if isinstance(valid, int) else round(valid * len(pairs))
    n_test = test if isinstance(test, int) else round(test * len(pairs))
    if n_valid + n_test >= len(pairs):
        raise ValueError(f"{name}: {len(pairs)} pairs cannot give {n_valid} valid + {n_test} test and a train split")
    return WordPairTask(name, pairs[n_valid + n_test:], pairs[:n_valid], pairs[n_valid:n_valid + n_test])


def training_set(tokenizer, pairs: Iterable[dict], template: str = QA_TEMPLATE, terminator: str = "\n"):
    """A ``datasets.Dataset`` of zero-shot prompts with answer-only labels, for ``Trainer``.

    ``terminator`` (default a newline, as between the shots of ``few_shot_prompt``) is appended to every
    answer and trained on too, so the model learns where the answer ends, not only how it starts
    (benchmarks/HISTORY.md, 2026-11-30: exact match rises, first-token accuracy is unchanged). "" trains the answer
    tokens alone."""
    from datasets import Dataset

    pairs = list(pairs)
    check_columns(pairs, ("input", "output"), "pairs", hint=" (load_word_pairs(..., input_column=, output_column=) renames yours)")
    if not pairs:
        raise ValueError("training_set got no pairs: give at least one {'input', 'output'} row")
    check_template(template)
    rows = [encode_pair(tokenizer, few_shot_prompt(p["input"], template=template), p["output"] + terminator) for p in pairs]
    return Dataset.from_list(rows)
