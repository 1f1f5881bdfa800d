"""Where task data comes from: your rows, a file, a ``datasets.Dataset``, a Hub dataset, or a named
reference task in a data folder that you point to (``data_dir=`` or ``$HEADWISE_DATA``).

Nothing is looked up beside the installed package: a reference task name without a data folder is an
error that says what to pass.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["DATA_ENV", "DataSourceError", "FILE_SUFFIXES", "data_folder", "read_rows"]

DATA_ENV = "HEADWISE_DATA"
FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")


class DataSourceError(ValueError):
    """Task data that cannot be found or read; the message says what to pass instead."""


def data_folder(data_dir: str | os.PathLike | None = None, needed_for: str = "reference tasks") -> Path:
    """The reference data folder: ``data_dir``, else ``$HEADWISE_DATA``."""
    folder = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if not folder:
        raise DataSourceError(
            f"{needed_for} are read from a data folder: pass data_dir=FOLDER or set ${DATA_ENV}=FOLDER "
            "(the folder holding function_vectors/ and classification/), or give your own data as a "
            "JSON / JSONL / CSV file, a list of rows, a datasets.Dataset or a Hub dataset name"
        )
    path = Path(folder).expanduser()
    if not path.is_dir():
        source = "data_dir" if data_dir is not None else f"${DATA_ENV}"
        raise DataSourceError(f"{path} ({source}) is not a folder")
    return path


def _read_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            rows = json.loads(text)
            if isinstance(rows, dict) and len(rows) == 1 and isinstance(next(iter(rows.values())), list):
                rows = next(iter(rows.values()))  # {"data": [...]}
        else:
            rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
    except json.JSONDecodeError as error:
        raise DataSourceError(f"{path} is not valid {suffix[1:].upper()} ({error})") from error
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise DataSourceError(f"{path} must hold a list of rows (objects with named fields)")
    return rows


def _load_hub_dataset(name: str, split: str) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001  (network, missing repo, bad split: all end in the same advice)
        raise DataSourceError(
            f"{name!r} is not a file, and loading it as a Hub dataset failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            f"give a JSON / JSONL / CSV file, a list of rows, a datasets.Dataset, or a reference task "
            f"name with data_dir= / ${DATA_ENV}"
        ) from error
    return [dict(row) for row in dataset]


def read_rows(source: Any, split: str = "train") -> list[dict]:
    """Rows (dicts) from a list of dicts, a ``datasets.Dataset`` (or ``DatasetDict``: ``split``), a
    JSON / JSONL / CSV / TSV file, or a Hub dataset name (``datasets.load_dataset(name, split=split)``)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_file():
            return _read_file(path)
        if path.suffix.lower() in FILE_SUFFIXES or path.is_dir():
            raise DataSourceError(f"{path} is not a data file: give an existing JSON / JSONL / CSV file")
        return _load_hub_dataset(str(source), split)
    if isinstance(source, dict) and source and all(hasattr(part, "column_names") for part in source.values()):
        if split not in source:  # a DatasetDict
            raise DataSourceError(f"no split {split!r}; the data has {', '.join(source)}: pass split=")
        source = source[split]
    if isinstance(source, dict):
        raise DataSourceError("give rows as a list of dicts (or a Dataset), not one dict")
    if not isinstance(source, Iterable):
        raise DataSourceError(f"cannot read task data from a {type(source).__name__}")
    rows = [dict(row) for row in source]
    return rows
