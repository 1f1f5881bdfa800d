"""``headwise eval DIR``: accuracy of a saved adapter on a data set, optionally beside its bare base model."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .errors import UserError
from .options import add_data_options, add_model_option, classification, load_model, read_task_file, unescape, word_pairs

logger = logging.getLogger("headwise.cli")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "eval", help="accuracy of a saved adapter on a data set",
        description="Word-pair data: first-token accuracy and greedy exact match on zero-shot prompts. "
                    "Classification data (--labels, a reference set, or an adapter trained on one): label-constrained "
                    "and free-generation accuracy. The prompt format defaults to the one the adapter was trained with.",
    )
    parser.add_argument("adapter", metavar="DIR", help="an adapter folder (or Hub repo) that save_pretrained wrote")
    add_model_option(parser, required=False)
    add_data_options(parser)
    parser.add_argument("--baseline", action="store_true", help="also score the base model with the adapter disabled")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(run=run)


def _load(args):
    import headwise

    from ..loading import resolve_adapter_folder

    if args.model is None:
        return headwise.load_adapter_model(args.adapter)
    model, tokenizer = load_model(args.model)
    return headwise.from_pretrained(model, str(resolve_adapter_folder(args.adapter))), tokenizer


def _items(args, record: dict) -> dict:
    """The prompts and targets to score, read (and checked) before any model is loaded."""
    from ..experiments.classification import CLASSIFICATION_TASKS
    from ..experiments.data import QA_TEMPLATE, few_shot_prompt

    if args.labels or record.get("kind") == "classification" or args.data in CLASSIFICATION_TASKS:
        if not args.labels and record.get("label_words") and args.data not in CLASSIFICATION_TASKS:
            args.labels = record["label_words"]
        if args.data not in CLASSIFICATION_TASKS:
            args.template = args.template or record.get("template")
        task, rows = classification(args, "test")
        return {"prompts": [task.prompt(row) for row in rows], "labels": [row["label"] for row in rows],
                "label_words": task.label_words}
    template = unescape(args.template) or record.get("template") or QA_TEMPLATE
    pairs = word_pairs(args)
    return {"prompts": [few_shot_prompt(p["input"], template=template) for p in pairs], "answers": [p["output"] for p in pairs]}


def _scores(model, tokenizer, items: dict, batch_size: int) -> dict[str, float]:
    from ..experiments.evaluate import first_token_accuracy, greedy_exact_match, label_accuracy

    prompts = items["prompts"]
    if "labels" in items:
        result = label_accuracy(model, tokenizer, prompts, items["labels"], items["label_words"], batch_size)
        return {"items": len(prompts), "label_accuracy": result.constrained, "generated_accuracy": result.generated,
                "not_a_label": result.not_a_label}
    return {
        "items": len(prompts),
        "first_token_accuracy": first_token_accuracy(model, tokenizer, prompts, items["answers"], batch_size),
        "exact_match": greedy_exact_match(model, tokenizer, prompts, items["answers"], batch_size),
    }


def run(args: argparse.Namespace) -> None:
    record = read_task_file(Path(args.adapter)) if Path(args.adapter).is_dir() else {}
    items = _items(args, record)
    if not items["prompts"]:
        raise UserError(f"{args.data} holds no rows to score")
    model, tokenizer = _load(args)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    results = {"adapter": _scores(model, tokenizer, items, args.batch_size)}
    if args.baseline:
        with model.disable_adapter():
            results["base model"] = _scores(model, tokenizer, items, args.batch_size)
    if args.json:
        print(json.dumps(results))
        return
    metrics = [k for k in results["adapter"] if k != "items"]
    print(f"{results['adapter']['items']} items of {args.data}")
    print("| model | " + " | ".join(m.replace("_", " ") for m in metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    for name, scores in results.items():
        print(f"| {name} | " + " | ".join(f"{scores[m]:.3f}" for m in metrics) + " |")
