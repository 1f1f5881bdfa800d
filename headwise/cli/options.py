"""Options shared by the subcommands, and turning them into a model and task data."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .errors import UserError

logger = logging.getLogger("headwise.cli")

TASK_FILE = "headwise_task.json"  # the prompt format an adapter was trained with, written by `headwise train`


def add_model_option(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--model", required=required, metavar="NAME_OR_PATH",
        help="base model: a checkpoint folder, a Hub id, or smollm2-135m-instruct (the bundled model)"
        + ("" if required else "; default: the base the adapter records"),
    )


def add_data_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=required, metavar="SOURCE",
                       help="JSON / JSONL / CSV file, Hub dataset name, or reference task name (antonym, sst2, ...)")
    group.add_argument("--data-dir", metavar="FOLDER", help="folder of the reference tasks (default: $HEADWISE_DATA)")
    group.add_argument("--split", default="train", help="split of a Hub dataset (default: train)")
    group.add_argument("--input-column", default="input", help="word-pair data: column of the query (default: input)")
    group.add_argument("--output-column", default="output", help="word-pair data: column of the answer (default: output)")
    group.add_argument("--template", help="prompt template naming the row's columns, e.g. 'Review: {text}\\nSentiment:' "
                                          "(word pairs default: 'Q: {input}\\nA:')")
    group.add_argument("--labels", nargs="+", metavar="WORD", help="classification data: one label word per class")
    group.add_argument("--label-column", default="label", help="classification data: class index or label word column")
    group.add_argument("--limit", type=int, metavar="N", help="use at most N rows")
    group.add_argument("--seed", type=int, default=0, help="seed of the data order, initialisation and batches")


def unescape(template: str | None) -> str | None:
    """Templates typed in a shell carry a literal backslash-n; prompts need a newline."""
    return None if template is None else template.replace("\\n", "\n")


def load_model(name_or_path: str, **model_kwargs):
    from ..experiments.bundled import load_base_model

    logger.info("loading %s", name_or_path)
    try:
        return load_base_model(name_or_path, **model_kwargs)
    except OSError as error:
        raise UserError(f"cannot load the model {name_or_path!r}: give a checkpoint folder, a Hub id or "
                        f"smollm2-135m-instruct ({str(error).splitlines()[0]})") from error


def is_classification(args) -> bool:
    from ..experiments.classification import CLASSIFICATION_TASKS

    return bool(args.labels) or args.data in CLASSIFICATION_TASKS


def word_pairs(args) -> list[dict]:
    """Rows {'input', 'output'} of ``--data``, shuffled with ``--seed``, at most ``--limit``."""
    from ..experiments.data import load_word_pairs

    task = load_word_pairs(args.data, valid=0, test=0, seed=args.seed, data_dir=args.data_dir,
                           input_column=args.input_column, output_column=args.output_column, split=args.split)
    return task.train[: args.limit] if args.limit else task.train


def classification(args, part: str):
    """``(task, rows)`` of ``--data``: for a reference set its ``part`` ("train" or "test"), else every row;
    shuffled with ``--seed``, at most ``--limit`` rows."""
    import random

    from ..experiments.classification import CLASSIFICATION_TASKS, load_classification

    if args.data in CLASSIFICATION_TASKS:
        task = load_classification(args.data, n_dev=0, n_test=10**9, seed=args.seed, data_dir=args.data_dir)
        rows = list(task.train if part == "train" else task.test)
    else:
        if not args.labels or not args.template:
            raise UserError("classification data needs --template (naming its columns) and --labels (one word per class)")
        task = load_classification(
            args.data, n_dev=0, n_test=0, seed=args.seed, data_dir=args.data_dir, template=unescape(args.template),
            label_words=args.labels, label_column=args.label_column, split=args.split,
        )
        rows = list(task.train)
    random.Random(args.seed).shuffle(rows)
    return task, rows[: args.limit] if args.limit else rows


def write_task_file(out: Path, record: dict) -> None:
    (out / TASK_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_task_file(folder: Path) -> dict:
    path = folder / TASK_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error})") from error
