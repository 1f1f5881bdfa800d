"""Text-classification sets (SST-2, CB, RTE, AG News as in "Calibrate Before Use") and their prompts."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from typing import Sequence

from .data import shared_data_dir

__all__ = ["ClassificationTask", "load_classification", "CLASSIFICATION_TASKS"]


@dataclass
class ClassificationTask:
    """Rows are {'fields': {...}, 'label': int}; ``label_words[i]`` names class i after the prompt."""

    name: str
    template: str  # with the row's fields, e.g. "Review: {text}\nSentiment:"
    label_words: list[str]
    train: list[dict]
    dev: list[dict]
    test: list[dict]

    def prompt(self, row: dict, demonstrations: Sequence[dict] = ()) -> str:
        """The row's prompt after ``demonstrations`` (answered rows), each answer a label word."""
        shots = [self.template.format(**d["fields"]) + " " + self.label_words[d["label"]] for d in demonstrations]
        return "\n\n".join([*shots, self.template.format(**row["fields"])])

    def demonstrations(self, k: int, seed: int = 0) -> list[dict]:
        """``k`` training rows cycling through the classes (balanced), in a seeded order."""
        rng = random.Random(seed)
        by_class = {c: [r for r in self.train if r["label"] == c] for c in range(len(self.label_words))}
        picks = [rng.choice(by_class[i % len(by_class)]) for i in range(k)]
        rng.shuffle(picks)
        return picks


def _jsonl(path, labels: list[str]) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows.append({"fields": {"premise": row["premise"].strip(), "hypothesis": row["hypothesis"].strip()}, "label": labels.index(row["label"])})
    return rows


def _sst2(path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        label, text = line.split(" ", 1)
        rows.append({"fields": {"text": text.strip()}, "label": int(label)})
    return rows


def _agnews(path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [{"fields": {"text": f"{title.strip()} {body.strip()}"}, "label": int(index) - 1} for index, title, body in reader]


def _split(rows: list[dict], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    rows = rows[:]
    random.Random(seed).shuffle(rows)
    return rows[n:], rows[:n]


def load_classification(name: str, n_dev: int = 100, n_test: int = 200, seed: int = 0) -> ClassificationTask:
    """Load a set from ``../shared/data/classification``. Calibration data (``dev``) never overlaps ``test``.

    SST-2: dev from its dev file, test from its test file. CB and RTE: their labelled val file is the
    test split (CB's test has no labels), dev comes from train. AG News: one labelled file, split.
    """
    root = shared_data_dir() / "classification"
    if name == "sst2":
        train = _sst2(root / "sst2" / "stsa.binary.train")
        dev, test = _sst2(root / "sst2" / "stsa.binary.dev"), _sst2(root / "sst2" / "stsa.binary.test")
        template, words = "Review: {text}\nSentiment:", ["negative", "positive"]
    elif name in ("cb", "rte"):
        labels = ["entailment", "contradiction", "neutral"] if name == "cb" else ["entailment", "not_entailment"]
        train, dev = _split(_jsonl(root / name / "train.jsonl", labels), n_dev, seed)
        test = _jsonl(root / name / "val.jsonl", labels)
        if name == "cb":
            template, words = "{premise}\nquestion: {hypothesis} true, false, or neither?\nanswer:", ["true", "false", "neither"]
        else:
            template, words = "{premise}\nquestion: {hypothesis} True or False?\nanswer:", ["True", "False"]
    elif name == "agnews":
        rest, test = _split(_agnews(root / "agnews" / "test.csv"), n_test, seed)
        train, dev = _split(rest, n_dev, seed + 1)
        template, words = "Article: {text}\nAnswer:", ["World", "Sports", "Business", "Technology"]
    else:
        raise ValueError(f"unknown classification set {name!r}; known: {', '.join(CLASSIFICATION_TASKS)}")
    dev = random.Random(seed).sample(dev, min(n_dev, len(dev)))
    test = random.Random(seed + 1).sample(test, min(n_test, len(test)))  # the same test items whatever n_dev
    return ClassificationTask(name, template, words, train, dev, test)


CLASSIFICATION_TASKS = ("sst2", "cb", "rte", "agnews")
