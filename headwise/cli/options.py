"""Turning the command's options into checked data, a model and the task record saved beside an adapter.

Everything here reads and checks the user's input before a model is loaded, and says which flag to change.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Callable

from .errors import UserError

logger = logging.getLogger("headwise.cli")

TASK_FILE = "headwise_task.json"  # the prompt format an adapter was trained with, written by `headwise train`

# The library's keyword arguments, as the flags of the command that set them.
FLAGS = {"data_dir=": "--data-dir", "input_column=": "--input-column", "output_column=": "--output-column",
         "label_column=": "--label-column", "label_words=": "--labels", "template=": "--template", "split=": "--split",
         "valid=0": "a smaller --valid", "valid=": "--valid"}


def in_flag_terms(message: str) -> str:
    """A library message with its keyword arguments renamed to the command's flags."""
    for keyword, flag in FLAGS.items():
        message = message.replace(keyword, flag)
    return message


def silence_progress_bars() -> None:
    """``--quiet``: no progress bars from headwise, transformers or datasets."""
    from transformers.utils import logging as transformers_logging

    from ..progress import disable_progress_bars

    disable_progress_bars()
    transformers_logging.disable_progress_bar()


def unescape(template: str | None) -> str | None:
    """Templates typed in a shell carry a literal backslash-n; prompts need a newline."""
    return None if template is None else template.replace("\\n", "\n")


def file_rows(args) -> list[dict] | None:
    """The rows of ``--data`` when it names a file (it must exist and hold rows); None for a task or Hub name."""
    from ..experiments.sources import FILE_SUFFIXES, DataSourceError, read_rows

    path = Path(args.data).expanduser()
    if path.is_dir():
        raise UserError(f"--data {args.data} is a folder: give a JSON / JSONL / CSV file or a task name")
    if not path.is_file():
        if path.suffix.lower() in FILE_SUFFIXES or "/" in args.data:
            raise UserError(f"--data {args.data}: no such file")
        return None
    try:
        rows = read_rows(path)
    except DataSourceError as error:
        raise UserError(f"--data {args.data}: {error}") from error
    if not rows:
        raise UserError(f"--data {args.data} is empty: give a file with at least one row")
    return rows


def check_columns(args, rows: list[dict], needed: dict[str, str]) -> None:
    """Every row has the columns ``needed`` ({column: the flag that names it}), else an error naming the flag."""
    for number, row in enumerate(rows, 1):
        for column, flag in needed.items():
            if column not in row:
                where = "its rows have" if number == 1 else f"row {number} has only"
                raise UserError(f"--data {args.data} has no column {column!r} ({where} {', '.join(map(str, row)) or 'none'}): "
                                f"pass {flag} with the column's name")


def word_pairs(args) -> list[dict]:
    """Rows {'input', 'output'} of ``--data``, shuffled with ``--seed``, at most ``--limit``."""
    from ..experiments.data import load_word_pairs
    from ..experiments.sources import DataSourceError

    rows = file_rows(args)
    if rows is not None:
        check_columns(args, rows, {args.input_column: "--input-column", args.output_column: "--output-column"})
    try:
        task = load_word_pairs(args.data if rows is None else rows, valid=0, test=0, seed=args.seed,
                               data_dir=args.data_dir, input_column=args.input_column,
                               output_column=args.output_column, split=args.split, name=str(args.data))
    except (DataSourceError, ValueError) as error:
        raise UserError(in_flag_terms(str(error))) from error
    return task.train[: args.limit] if args.limit else task.train


def is_classification(args) -> bool:
    from ..experiments.classification import CLASSIFICATION_TASKS

    return bool(args.labels) or args.data in CLASSIFICATION_TASKS


def classification(args, part: str):
    """``(task, rows)`` of ``--data``: for a reference set its ``part`` ("train" or "test"), else every row;
    shuffled with ``--seed``, at most ``--limit`` rows."""
    from ..experiments.classification import CLASSIFICATION_TASKS, load_classification
    from ..experiments.sources import DataSourceError

    try:
        if args.data in CLASSIFICATION_TASKS:
            task = load_classification(args.data, n_dev=0, n_test=10**9, seed=args.seed, data_dir=args.data_dir)
            rows = list(task.train if part == "train" else task.test)
        else:
            if not args.labels or not args.template:
                raise UserError("classification data needs --template (naming its columns, e.g. 'Review: {text}\\nSentiment:') "
                                "and --labels (one word per class)")
            source = file_rows(args)
            if source is not None:
                named = re.findall(r"{(\w+)}", unescape(args.template))
                check_columns(args, source, {args.label_column: "--label-column", **{c: "--template" for c in named}})
            task = load_classification(
                args.data if source is None else source, n_dev=0, n_test=0, seed=args.seed, data_dir=args.data_dir,
                template=unescape(args.template), label_words=args.labels, label_column=args.label_column,
                split=args.split,
            )
            rows = list(task.train)
    except (DataSourceError, ValueError) as error:
        raise UserError(in_flag_terms(str(error))) from error
    random.Random(args.seed).shuffle(rows)
    return task, rows[: args.limit] if args.limit else rows


CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def check_decoder(name_or_path: str):
    """Refuse, from its config alone, a model that is no decoder-only causal language model; return the config
    (None for a bundled model not converted yet)."""
    from transformers import AutoConfig

    from ..experiments.bundled import bundled_name_of, cache_root

    bundled = bundled_name_of(name_or_path)
    if bundled is not None:
        converted = cache_root() / bundled
        return AutoConfig.from_pretrained(converted) if (converted / "config.json").exists() else None
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the model {name_or_path!r}: give a checkpoint folder, a Hub id or "
                        f"smollm2-135m-instruct ({str(error).splitlines()[0]})") from error
    architectures = list(getattr(config, "architectures", None) or [])
    encoder = getattr(config, "is_encoder_decoder", False) or (
        architectures and not any(a.endswith(CAUSAL_SUFFIXES) for a in architectures)
    )
    if encoder:
        kind = architectures[0] if architectures else config.model_type
        raise UserError(f"--model {name_or_path} is a {kind}, not a decoder-only language model: headwise adapts the "
                        "attention heads of causal LMs (AutoModelForCausalLM: Llama, Qwen2, Mistral, GPT-2, ...)")
    return config


def load_model(name_or_path: str, check_config: Callable | None = None, **model_kwargs):
    """The model and tokenizer, after the config checks (``check_config(config)``: the caller's own) pass."""
    from ..experiments.bundled import load_base_model

    config = check_decoder(name_or_path)
    if check_config is not None and config is not None:
        check_config(config)
    logger.info("loading %s", name_or_path)
    try:
        model, tokenizer = load_base_model(name_or_path, **model_kwargs)
    except OSError as error:
        raise UserError(f"cannot load the model {name_or_path!r}: give a checkpoint folder, a Hub id or "
                        f"smollm2-135m-instruct ({str(error).splitlines()[0]})") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


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
