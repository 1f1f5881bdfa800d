"""``headwise eval DIR``: accuracy of a saved adapter on a data set, beside the base model on zero-shot or
few-shot prompts, with the predictions shown or written on request."""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .options import classification, load_model, read_task_file, unescape, word_pairs
from .report import table

logger = logging.getLogger("headwise.cli")


@dataclass
class Items:
    """What to score: the zero-shot prompts, the expected outputs, and the rows few-shot prompts draw from."""

    prompts: list[str]
    queries: list[str]
    expected: list  # answers (word pairs) or class indices (classification)
    label_words: list[str] | None = None
    few_shot: dict[int, list[str]] = field(default_factory=dict)  # K -> one few-shot prompt per item


def _word_pair_items(args, record: dict) -> Items:
    from ..experiments.data import QA_TEMPLATE, few_shot_prompt

    template = unescape(args.template) or record.get("template") or QA_TEMPLATE
    pairs = word_pairs(args)
    items = Items([few_shot_prompt(p["input"], template=template) for p in pairs], [p["input"] for p in pairs],
                  [p["output"] for p in pairs])
    for shots in _shots(args, len(pairs)):
        rng = random.Random(args.seed)
        items.few_shot[shots] = [
            few_shot_prompt(pair["input"], rng.sample(pairs[:i] + pairs[i + 1:], shots), template=template)
            for i, pair in enumerate(pairs)
        ]
    return items


def _classification_items(args, record: dict) -> Items:
    from ..experiments.classification import CLASSIFICATION_TASKS

    if args.data not in CLASSIFICATION_TASKS:
        args.labels = args.labels or record.get("label_words")
        args.template = args.template or record.get("template")
    task, rows = classification(args, "test")
    queries = [" / ".join(map(str, row["fields"].values()))[:60] for row in rows]
    items = Items([task.prompt(row) for row in rows], queries, [row["label"] for row in rows], task.label_words)
    pool = rows if args.data not in CLASSIFICATION_TASKS else list(task.train)
    for shots in _shots(args, len(pool)):
        rng = random.Random(args.seed)
        items.few_shot[shots] = [task.prompt(row, rng.sample([r for r in pool if r is not row], shots)) for row in rows]
    return items


def _shots(args, available: int) -> list[int]:
    """The K of every ``--baseline few-shot=K``, checked against the rows there are to draw from."""
    shots = sorted({k for kind, k in args.baseline or () if kind == "few-shot"})
    if shots and shots[-1] > available - 1:
        raise UserError(f"--baseline few-shot={shots[-1]} draws {shots[-1]} demonstrations per query from the other rows "
                        f"of --data, which has {available}; give a smaller K")
    return shots


def _items(args, record: dict) -> Items:
    """The prompts and targets to score, read (and checked) before any model is loaded."""
    from ..experiments.classification import CLASSIFICATION_TASKS

    if args.labels or record.get("kind") == "classification" or args.data in CLASSIFICATION_TASKS:
        return _classification_items(args, record)
    return _word_pair_items(args, record)


def _predict(model, tokenizer, items: Items, prompts: list[str], batch_size: int) -> tuple[dict, list]:
    """``(scores, per-item predictions)`` of ``model`` on ``prompts``."""
    from ..experiments import evaluate

    if items.label_words is not None:
        choices, texts = evaluate.label_predictions(model, tokenizer, prompts, items.label_words, batch_size)
        generated = [evaluate.generated_label(text, items.label_words) for text in texts]
        n = len(prompts)
        scores = {"label_accuracy": sum(c == y for c, y in zip(choices, items.expected)) / n,
                  "generated_accuracy": sum(g == y for g, y in zip(generated, items.expected)) / n,
                  "not_a_label": sum(g is None for g in generated) / n}
        return scores, [{"predicted": items.label_words[c], "generated": t.strip(), "correct": c == y}
                        for c, t, y in zip(choices, texts, items.expected)]
    hits = evaluate.first_token_hits(model, tokenizer, prompts, items.expected, batch_size)
    answers = evaluate.greedy_answers(model, tokenizer, prompts, batch_size)
    exact = [evaluate.is_exact_match(a, e) for a, e in zip(answers, items.expected)]
    scores = {"first_token_accuracy": sum(hits) / len(hits), "exact_match": sum(exact) / len(exact)}
    return scores, [{"predicted": a, "correct": c} for a, c in zip(answers, exact)]


def _load(args):
    import headwise

    from ..loading import resolve_adapter_folder

    if args.model is None:
        model, tokenizer = headwise.load_adapter_model(args.adapter)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer
    model, tokenizer = load_model(args.model)
    return headwise.from_pretrained(model, str(resolve_adapter_folder(args.adapter))), tokenizer


def _runs(args) -> list[tuple[str, int | None]]:
    """``(name, shots)`` of each scored run: the adapter first, then each ``--baseline`` (shots None: zero-shot)."""
    runs = [("adapter", None)]
    for kind, shots in dict.fromkeys(args.baseline or ()):
        runs.append(("base model" if kind == "zero-shot" else f"base model, {shots}-shot", shots or None))
    return runs


def _show(items: Items, predictions: dict[str, list], count: int) -> None:
    names = list(predictions)
    expected = items.expected if items.label_words is None else [items.label_words[y] for y in items.expected]
    rows = []
    for i in range(min(count, len(items.prompts))):
        cells = [f"{predictions[n][i]['predicted']} {'ok' if predictions[n][i]['correct'] else 'x'}" for n in names]
        rows.append([items.queries[i], expected[i], *cells])
    print(table(("input", "expected", *names), rows))


def _write_predictions(path: Path, items: Items, predictions: dict[str, list]) -> None:
    expected = items.expected if items.label_words is None else [items.label_words[y] for y in items.expected]
    with open(path, "w", encoding="utf-8") as handle:
        for i, prompt in enumerate(items.prompts):
            row = {"input": items.queries[i], "prompt": prompt, "expected": expected[i]}
            row.update({name: runs[i] for name, runs in predictions.items()})
            handle.write(json.dumps(row) + "\n")


def run(args: argparse.Namespace) -> None:
    record = read_task_file(Path(args.adapter)) if Path(args.adapter).is_dir() else {}
    if args.predictions and Path(args.predictions).is_dir():
        raise UserError(f"--predictions {args.predictions} is a folder: give a file name")
    items = _items(args, record)
    model, tokenizer = _load(args)
    model.eval()
    results, predictions = {}, {}
    for name, shots in _runs(args):
        prompts = items.prompts if shots is None else items.few_shot[shots]
        if name == "adapter":
            results[name], predictions[name] = _predict(model, tokenizer, items, prompts, args.batch_size)
        else:
            with model.disable_adapter():
                results[name], predictions[name] = _predict(model, tokenizer, items, prompts, args.batch_size)
        results[name] = {"items": len(prompts), **results[name]}
    if args.predictions:
        _write_predictions(Path(args.predictions), items, predictions)
    if args.json:
        print(json.dumps(results))
        return
    metrics = [k for k in results["adapter"] if k != "items"]
    print(f"{len(items.prompts)} items of {args.data}")
    print(table(("model", *(m.replace("_", " ") for m in metrics)),
                ([name, *(f"{scores[m]:.3f}" for m in metrics)] for name, scores in results.items())))
    if args.show:
        print()
        _show(items, predictions, args.show)
    if args.predictions:
        print(f"predictions: {args.predictions}")
