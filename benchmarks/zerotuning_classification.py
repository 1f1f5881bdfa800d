"""ZeroTuning on SST-2, CB, RTE, AG News, 0-shot and few-shot prompts, with and without a BOS initial token.

    python benchmarks/zerotuning_classification.py [--tasks sst2 cb rte agnews] [--seeds 0 1 2] [--n-dev 16]
        [--n-test 64] [--methods untuned supervised unsupervised trained] [--initial-tokens prompt bos]
        [--train-lr 0.1] [--model ...] [--device ...] [--json out.json] [--append]

``--initial-tokens``: ``prompt`` scores the prompts as they are (SmolLM2's tokenizer adds no BOS, so the
initial token ZeroTuning rescales is the prompt's first word); ``bos`` puts the tokenizer's BOS token first,
the attention sink the method's premise is about. Every row is run for each.

Rows per set and prompt: the untuned model; supervised ZeroTuning (head indices profiled at gamma=2 on
dev label accuracy, the dominant kind's top half tuned, one gamma grid-searched on dev); unsupervised
ZeroTuning (all heads, gamma minimising the entropy over the label words on dev prompts, no labels);
ln gamma of every head trained on train prompts with plain Trainer (0-shot prompts only; the epoch with
the best dev loss kept, the start included). Calibration
uses dev data only; test is reported. Accuracy by label-constrained scoring and by free greedy
generation (with the share of generations that are no label). Overhead: a forward pass of the adapted
model as a ratio to the bare model, interleaved in the same run. Each seed draws the dev / test / train
samples, the demonstrations and the batch order; tables give mean [min–max] over seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import headwise  # noqa: E402
from common import (add_run_arguments, apply_quick, headline_row, interval, load_model, markdown_table,  # noqa: E402
                    mean_spread, model_note, paired_bootstrap, publish, ResultCache, seed_note)
from headwise.experiments.classification import load_classification  # noqa: E402
from headwise.experiments.data import encode_pair, left_padded_batch  # noqa: E402
from headwise.experiments.evaluate import generated_label, label_predictions  # noqa: E402
from headwise.experiments.training import train  # noqa: E402
from splits import manifest  # noqa: E402
from zerotuning import ZeroTuningConfig, calibrate, entropy_score, label_accuracy_score, profile_heads, set_gamma  # noqa: E402

QUICK = {"tasks": ["sst2"], "n_test": 20, "n_train": 24, "methods": ["untuned", "unsupervised", "trained"], "zero_shot_only": True,
         "initial_tokens": ["prompt"]}
GRID = (0.5, 0.8, 1.0, 1.5, 2.5)
SHOTS = {"sst2": 2, "cb": 1, "rte": 1, "agnews": 2}
METHODS = ("untuned", "supervised", "unsupervised", "trained")


def scores(model, tokenizer, task, prompts, labels, batch_size: int = 8):
    """Per item: (label-constrained hit, generated hit, generation is no label word)."""
    choices, texts = label_predictions(model, tokenizer, prompts, task.label_words, batch_size)
    generated = [generated_label(text, task.label_words) for text in texts]
    return ([float(c == y) for c, y in zip(choices, labels)], [float(g == y) for g, y in zip(generated, labels)],
            [float(g is None) for g in generated])


def mean(values) -> float:
    return sum(values) / len(values)


@torch.no_grad()
def overhead(model, tokenizer, prompts, repeats=9):
    """Median forward time of the adapted model over the bare one (adapters disabled), interleaved with the
    order alternating, so that drift in the machine's speed hits both sides alike."""
    batch = left_padded_batch(tokenizer, prompts[:8], next(model.parameters()).device)
    times = {True: [], False: []}
    for repeat in range(repeats):
        for adapted in ((True, False) if repeat % 2 else (False, True)):
            with contextlib.nullcontext() if adapted else model.disable_adapter():
                start = time.perf_counter()
                model(**batch)
                times[adapted].append(time.perf_counter() - start)
    return statistics.median(times[True]) / statistics.median(times[False])


def task_splits(name: str, seed: int, args):
    """One set's task (train / dev / test) at ``seed`` and its manifest (what tests/test_benchmark_splits.py checks);
    dev is the only data any choice (heads, gamma, the trained epoch) sees."""
    task = load_classification(name, n_dev=args.n_dev, n_test=args.n_test, seed=seed)
    return task, manifest(name, seed, train=task.train[: args.n_train], dev=task.dev, test=task.test)


def run_task(name, args, base, tokenizer, log, seed, initial: str):
    """Every row of one set at one seed with ``initial`` ("prompt" or "bos") first: per-item scores per
    (prompt kind, method), the forward overhead, and the split's manifest."""
    task, splits = task_splits(name, seed, args)
    bos = tokenizer.bos_token if initial == "bos" else ""
    if initial == "bos" and not bos:
        raise SystemExit(f"--initial-tokens bos: the tokenizer of {args.model} has no BOS token")
    num_layers = len(headwise.find_head_sites(base))
    model = headwise.wrap(base, ZeroTuningConfig(heads="all"))
    rows, head_choice = {}, None
    began = time.perf_counter()

    def stage(text):
        log(f"  [{name} {time.perf_counter() - began:6.0f} s] {text}")

    ratio = None
    for shots in (0,) if args.zero_shot_only else (0, SHOTS[name]):
        demos = task.demonstrations(shots, seed=seed)
        dev_prompts = [bos + task.prompt(r, demos) for r in task.dev]
        test_prompts = [bos + task.prompt(r, demos) for r in task.test]
        dev_labels, test_labels = [r["label"] for r in task.dev], [r["label"] for r in task.test]
        kind = f"{shots}-shot"
        set_gamma(model, 1.0)
        if "untuned" in args.methods:
            with model.disable_adapter():
                rows[(kind, "untuned")] = scores(model, tokenizer, task, test_prompts, test_labels, args.batch_size)
            stage(f"{kind} untuned scored")
        if "supervised" in args.methods:
            supervised = label_accuracy_score(tokenizer, dev_prompts, dev_labels, task.label_words)
            if head_choice is None:  # profiled once per set, on the 0-shot dev prompts
                profile = profile_heads(model, supervised, gamma=2.0)
                head_choice = profile.heads(0.5, num_layers)
                profile.plot(Path(args.out) / f"zerotuning_profile_{name}.png", title=f"ZeroTuning profile: {name}")
                stage("heads profiled")
            gamma, _ = calibrate(model, supervised, GRID, heads=head_choice)
            rows[(kind, f"supervised (gamma {gamma:g} on {len(head_choice) // num_layers} head indices)")] = scores(
                model, tokenizer, task, test_prompts, test_labels, args.batch_size
            )
            stage(f"{kind} supervised calibrated and scored")
            set_gamma(model, 1.0)
        if "unsupervised" in args.methods:
            gamma, _ = calibrate(model, entropy_score(tokenizer, dev_prompts, task.label_words), GRID)
            rows[(kind, f"unsupervised entropy (gamma {gamma:g}, all heads)")] = scores(
                model, tokenizer, task, test_prompts, test_labels, args.batch_size)
            stage(f"{kind} unsupervised calibrated and scored")
        if shots == 0:
            ratio = overhead(model, tokenizer, test_prompts)
    if "trained" in args.methods:
        from datasets import Dataset

        set_gamma(model, 1.0)
        encode = lambda rows: Dataset.from_list([encode_pair(tokenizer, bos + task.prompt(r), task.label_words[r["label"]]) for r in rows])  # noqa: E731
        train(model, encode(task.train[: args.n_train]), args.train_lr, epochs=args.train_epochs, batch_size=8, seed=seed,
              eval_dataset=encode(task.dev), use_cpu=args.device == "cpu")  # the dev items the calibrated rows use: keep the best epoch
        zero_prompts = [bos + task.prompt(r) for r in task.test]
        rows[("0-shot", f"trained ln gamma (all heads, lr {args.train_lr:g})")] = scores(
            model.eval(), tokenizer, task, zero_prompts, [r["label"] for r in task.test], args.batch_size
        )
        stage("ln gamma trained and scored")
    model.unload()
    for (kind, label), (acc, gen, invalid) in rows.items():
        log(f"{name} {initial} {kind} {label}: label {mean(acc):.3f} generated {mean(gen):.3f} (not a label {mean(invalid):.2f})")
    return rows, ratio, splits


def arguments(argv=None):
    """The command line (``argv``, default sys.argv), ``--quick`` applied."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["sst2", "cb", "rte", "agnews"])
    parser.add_argument("--n-dev", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--initial-tokens", nargs="+", default=["prompt", "bos"], choices=["prompt", "bos"],
                        help="prompt: the prompt's own first token is the initial token; bos: the tokenizer's BOS first")
    parser.add_argument(
        "--train-lr", type=float, default=0.1,
        help="Adam moves ln gamma by about lr a step: 0.1 reaches the calibrated range (|ln gamma| <= 1.9) in ~20 steps",
    )
    parser.add_argument("--train-epochs", type=float, default=2)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--zero-shot-only", action="store_true", help="skip the few-shot prompts")
    add_run_arguments(parser, QUICK, resume=True)
    return apply_quick(parser.parse_args(argv), QUICK, argv)


def main():
    args = arguments()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    base, tokenizer = load_model(args)
    log = lambda text: print(text, flush=True)  # noqa: E731
    cache = ResultCache(args.resume, args)

    def cached(name, seed, initial):
        """One set, seed and initial token: from --resume's file if it is there, else run (and kept, with its time)."""
        def compute():
            start = time.perf_counter()
            rows, ratio, splits = run_task(name, args, base, tokenizer, log, seed, initial)
            return {"rows": [[kind, label, *values] for (kind, label), values in rows.items()], "ratio": ratio,
                    "splits": splits, "seconds": time.perf_counter() - start}
        stored = cache.run(f"{name} ({initial} first)", seed, compute)
        seconds.append(stored["seconds"])
        return {(kind, label): tuple(values) for kind, label, *values in stored["rows"]}, stored["ratio"], stored["splits"]

    seconds = []
    runs = {initial: {seed: {name: cached(name, seed, initial) for name in args.tasks} for seed in args.seeds}
            for initial in args.initial_tokens}

    method_of = lambda label: label.split(" (")[0]  # noqa: E731  the row name without its per-run gamma
    table, items = [], {}
    for initial in args.initial_tokens:
        first = runs[initial][args.seeds[0]]
        keys = list(dict.fromkeys((kind, method_of(label)) for rows, _, _ in first.values() for kind, label in rows))
        for kind, method in keys:
            cells, per_seed_means = [], {seed: [] for seed in args.seeds}
            for name in args.tasks:
                found = []
                for seed in args.seeds:
                    rows = runs[initial][seed][name][0]
                    match = [(label, v) for (k, label), v in rows.items() if k == kind and method_of(label) == method]
                    if match:
                        found.append(match[0])
                        per_seed_means[seed].append(mean(match[0][1][0]))
                        items.setdefault((initial, kind, method), []).append(match[0][1][0])
                if not found:
                    cells.append("")
                    continue
                details = [label[len(method):].strip(" ()").split(",")[0] for label, _ in found]
                gammas = "/".join(d.replace("gamma ", "") for d in details if d.startswith("gamma "))
                generated = mean([mean(v[1]) for _, v in found])
                invalid = mean([mean(v[2]) for _, v in found])
                cells.append(f"{mean_spread([mean(v[0]) for _, v in found])} / {generated:.2f} ({invalid:.0%} not a label)"
                             + (f" γ {gammas}" if gammas else ""))
            complete = all(len(v) == len(args.tasks) for v in per_seed_means.values())
            overall = mean_spread([mean(v) for v in per_seed_means.values()], 3) if complete else ""
            table.append([initial, kind, method, *cells, overall])
    header = ["initial token", "prompt", "method", *[f"{n} (label / generated)" for n in args.tasks], "mean label acc"]
    comparisons, difference_rows = {}, []
    for (initial, kind, method), method_items in items.items():
        reference = items.get((initial, kind, "untuned"))
        if method != "untuned" and reference is not None and len(reference) == len(method_items):
            figure = paired_bootstrap(method_items, reference)
            comparisons[f"{initial} / {kind} / {method}"] = figure
            difference_rows.append([initial, kind, f"{method} − untuned", interval(figure)])
    if "prompt" in args.initial_tokens and "bos" in args.initial_tokens:
        for (initial, kind, method), method_items in items.items():
            other = items.get(("bos", kind, method))
            if initial == "prompt" and other is not None and len(other) == len(method_items):
                figure = paired_bootstrap(other, method_items)
                comparisons[f"bos vs prompt / {kind} / {method}"] = figure
                difference_rows.append(["bos − prompt", kind, method, interval(figure)])
    scope = f"{len(args.tasks)} sets x {len(args.seeds)} seeds x up to {args.n_test} items"
    headline = [headline_row("ZeroTuning on classification", f"{key.split(' / ')[2]} ZeroTuning ({initial} first)", "untuned",
                             "label accuracy, 0-shot", figure, scope)
                for initial in args.initial_tokens for key, figure in comparisons.items() if key.startswith(f"{initial} / 0-shot / ")]
    text = (markdown_table(header, table) + "\n\nPaired differences of label-constrained accuracy (same test items), mean "
            "over sets and seeds, 95% bootstrap interval:\n\n"
            + markdown_table(["initial token", "prompt", "comparison", "difference [95% CI]"], difference_rows))
    ratios = [r for initial in runs.values() for seed in initial.values() for _, r, _ in seed.values() if r is not None]
    overheads = f"{min(ratios):.3f}–{max(ratios):.3f} over {len(ratios)} runs" if ratios else "not measured"
    minutes = sum(seconds) / 60  # the sets' own time, also when --resume spread the run over several invocations
    settings = (f"{model_note(args)}; {minutes:.0f} min. Dev {args.n_dev} items (calibration only), test up to {args.n_test} "
                f"items (CB: its 56 labelled val rows); few-shot = {SHOTS} demonstrations; gamma grid {GRID}; methods: "
                f"{', '.join(args.methods)}"
                + (f"; trained ln gamma: {args.n_train} train prompts, {args.train_epochs:g} epoch(s), lr {args.train_lr:g}"
                   if "trained" in args.methods else "")
                + f". Label accuracy "
                f"counts every surface form of a label. Initial token: 'prompt' = the prompt's first token (no BOS is "
                f"added by this tokenizer), 'bos' = the tokenizer's BOS token ({tokenizer.bos_token!r}) put first. "
                f"{seed_note(args.seeds)} Per set: label-constrained mean [min–max] / generated mean (share of "
                f"generations that are no label), γ per seed.")
    footer = f"Forward-pass overhead, adapted / bare (median of 9 interleaved runs, batch 8): {overheads}"
    splits = {initial: {seed: {name: runs[initial][seed][name][2] for name in args.tasks} for seed in args.seeds}
              for initial in args.initial_tokens}
    per_item = {" / ".join(k): v for k, v in items.items()}
    publish("ZeroTuning on classification", settings, text, args, footer=footer, headline=headline, header=header,
            rows=table, comparisons=comparisons, forward_overhead=ratios, splits=splits[args.initial_tokens[0]], items=per_item)


if __name__ == "__main__":
    main()
