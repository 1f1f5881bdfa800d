"""Text-classification sets (SST-2, CB, RTE, AG News as in "Calibrate Before Use") and their prompts."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from dataclasses import dataclass
from typing import Sequence

from .data import check_columns, shared_data_dir
from .sources import DataSourceError, read_rows

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
        demonstrations = list(demonstrations)
        check_columns([row], ("fields",), "row", hint=" (rows of a ClassificationTask are {'fields': {...}, 'label': int})")
        check_columns(demonstrations, ("fields", "label"), "demonstrations",
                      hint=" (rows of a ClassificationTask are {'fields': {...}, 'label': int})")
        shots = [self._format(d["fields"]) + " " + self.label_words[d["label"]] for d in demonstrations]
        return "\n\n".join([*shots, self._format(row["fields"])])

    def _format(self, fields: dict) -> str:
        try:
            return self.template.format(**fields)
        except KeyError as error:
            raise DataSourceError(
                f"the template {self.template!r} names the column {error.args[0]!r}, which this row lacks; it has "
                f"{sorted(map(str, fields))}: fix the template or the rows"
            ) from None

    def demonstrations(self, k: int, seed: int = 0) -> list[dict]:
        """``k`` training rows cycling through the classes (balanced), in a seeded order."""
        rng = random.Random(seed)
        by_class = {c: [r for r in self.train if r["label"] == c] for c in range(len(self.label_words))}
        if k > 0:
            empty = [c for c, rows in by_class.items() if not rows and c < k]
            if empty:
                raise ValueError(
                    f"no training row of class {empty[0]} ({self.label_words[empty[0]]!r}) to draw a balanced demonstration "
                    f"from; give training rows of every class, or fewer demonstrations than {k}"
                )
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


def load_classification(
    source, n_dev: int = 100, n_test: int = 200, seed: int = 0, *, data_dir=None, template: str | None = None,
    label_words: Sequence[str] | None = None, label_column: str = "label", split: str = "train",
) -> ClassificationTask:
    """A classification task with seeded dev (calibration) and test splits that never overlap.

    ``source``: a reference set name ("sst2", "cb", "rte", "agnews"; read from ``data_dir`` or
    ``$HEADWISE_DATA``, with the prompts of "Calibrate Before Use"), or your rows: a JSON / JSONL /
    CSV file, a list of dicts, a ``datasets.Dataset`` or a Hub dataset name (``split`` of it). Your rows
    need ``template`` (naming their columns, e.g. "Review: {text}\nSentiment:"), ``label_words`` and a
    ``label_column`` holding a class index or a label word.
    """
    if isinstance(source, str) and source in CLASSIFICATION_TASKS:
        if template is not None or label_words is not None:
            raise ValueError(f"{source!r} is a reference set with its own prompt: drop template= / label_words=")
        return _reference_task(source, n_dev, n_test, seed, data_dir)
    if template is None or not label_words:
        raise ValueError(
            "your own classification rows need template= (e.g. 'Review: {text}\\nSentiment:') and label_words= "
            f"(one word per class); reference sets are {', '.join(CLASSIFICATION_TASKS)}"
        )
    label_words = list(label_words)
    rows = [_user_row(row, label_column, label_words, template) for row in read_rows(source, split=split)]
    if n_dev + n_test > len(rows):
        raise ValueError(f"{len(rows)} rows cannot give {n_dev} dev + {n_test} test rows")
    rows = rows[:]
    random.Random(seed).shuffle(rows)
    name = Path(str(source)).stem if isinstance(source, (str, os.PathLike)) else "task"
    return ClassificationTask(name, template, label_words, rows[n_dev + n_test:], rows[n_test:n_test + n_dev], rows[:n_test])


def _user_row(row: dict, label_column: str, label_words: list[str], template: str) -> dict:
    if label_column not in row:
        raise ValueError(f"a row has no {label_column!r} column (columns: {sorted(row)}): pass label_column=")
    label = row[label_column]
    if isinstance(label, str) and label.strip() in label_words:
        index = label_words.index(label.strip())
    elif str(label).strip().lstrip("-").isdigit() and 0 <= int(label) < len(label_words):
        index = int(label)
    else:
        raise ValueError(f"label {label!r} is neither one of {label_words} nor a class index below {len(label_words)}")
    fields = {key: (value.strip() if isinstance(value, str) else value) for key, value in row.items() if key != label_column}
    try:
        template.format(**fields)
    except KeyError as error:
        raise ValueError(f"the template names {error} but the rows have columns {sorted(fields)}") from error
    return {"fields": fields, "label": index}


def _reference_task(name: str, n_dev: int, n_test: int, seed: int, data_dir) -> ClassificationTask:
    """SST-2: dev from its dev file, test from its test file. CB and RTE: their labelled val file is the
    test split (CB's test has no labels), dev comes from train. AG News: one labelled file, split."""
    root = shared_data_dir(data_dir) / "classification"
    if not (root / name).is_dir():
        raise DataSourceError(f"{root / name} is missing: point data_dir / $HEADWISE_DATA at the folder holding classification/")
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
    dev = random.Random(seed).sample(dev, min(n_dev, len(dev)))
    test = random.Random(seed + 1).sample(test, min(n_test, len(test)))  # the same test items whatever n_dev
    return ClassificationTask(name, template, words, train, dev, test)


CLASSIFICATION_TASKS = ("sst2", "cb", "rte", "agnews")
