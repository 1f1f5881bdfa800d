"""ZeroTuning on SmolLM2-135M-Instruct: SST-2, CB, RTE, AG News, 0-shot and few-shot prompts.

    python benchmarks/zerotuning_classification.py [--tasks sst2 cb rte agnews] [--seeds 0 1 2] [--n-dev 16]
        [--n-test 64] [--methods untuned supervised unsupervised trained] [--train-lr 0.1] [--append]

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
from common import PLOTS, apply_quick, markdown_table, mean_spread, publish, quick_help, seed_note  # noqa: E402
from headwise.experiments.classification import load_classification  # noqa: E402
from headwise.experiments.data import encode_pair, left_padded_batch  # noqa: E402
from headwise.experiments.evaluate import label_accuracy  # noqa: E402
from headwise.experiments.training import train  # noqa: E402
from zerotuning import ZeroTuningConfig, calibrate, entropy_score, label_accuracy_score, profile_heads, set_gamma  # noqa: E402

QUICK = {"tasks": ["sst2"], "n_test": 20, "n_train": 24, "methods": ["untuned", "unsupervised", "trained"], "zero_shot_only": True}
GRID = (0.5, 0.8, 1.0, 1.5, 2.5)
SHOTS = {"sst2": 2, "cb": 1, "rte": 1, "agnews": 2}
METHODS = ("untuned", "supervised", "unsupervised", "trained")


def scores(model, tokenizer, task, prompts, labels):
    result = label_accuracy(model, tokenizer, prompts, labels, task.label_words)
    return result.constrained, result.generated, result.not_a_label


@torch.no_grad()
def overhead(model, tokenizer, prompts, repeats=9):
    """Median forward time of the adapted model over the bare one (adapters disabled), interleaved with the
    order alternating, so that drift in the machine's speed hits both sides alike."""
    batch = left_padded_batch(tokenizer, prompts[:8])
    times = {True: [], False: []}
    for repeat in range(repeats):
        for adapted in ((True, False) if repeat % 2 else (False, True)):
            with contextlib.nullcontext() if adapted else model.disable_adapter():
                start = time.perf_counter()
                model(**batch)
                times[adapted].append(time.perf_counter() - start)
    return statistics.median(times[True]) / statistics.median(times[False])


def run_task(name, args, base, tokenizer, log, seed):
    task = load_classification(name, n_dev=args.n_dev, n_test=args.n_test, seed=seed)
    num_layers = len(headwise.find_head_sites(base))
    model = headwise.wrap(base, ZeroTuningConfig(heads="all"))
    rows, head_choice = {}, None
    began = time.perf_counter()

    def stage(text):
        log(f"  [{name} {time.perf_counter() - began:6.0f} s] {text}")

    ratio = None
    for shots in (0,) if args.zero_shot_only else (0, SHOTS[name]):
        demos = task.demonstrations(shots, seed=seed)
        dev_prompts = [task.prompt(r, demos) for r in task.dev]
        test_prompts = [task.prompt(r, demos) for r in task.test]
        dev_labels, test_labels = [r["label"] for r in task.dev], [r["label"] for r in task.test]
        kind = f"{shots}-shot"
        set_gamma(model, 1.0)
        if "untuned" in args.methods:
            with model.disable_adapter():
                rows[(kind, "untuned")] = scores(model, tokenizer, task, test_prompts, test_labels)
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
                model, tokenizer, task, test_prompts, test_labels
            )
            stage(f"{kind} supervised calibrated and scored")
            set_gamma(model, 1.0)
        if "unsupervised" in args.methods:
            gamma, _ = calibrate(model, entropy_score(tokenizer, dev_prompts, task.label_words), GRID)
            rows[(kind, f"unsupervised entropy (gamma {gamma:g}, all heads)")] = scores(model, tokenizer, task, test_prompts, test_labels)
            stage(f"{kind} unsupervised calibrated and scored")
        if shots == 0:
            ratio = overhead(model, tokenizer, test_prompts)
    if "trained" in args.methods:
        from datasets import Dataset

        set_gamma(model, 1.0)
        encode = lambda rows: Dataset.from_list([encode_pair(tokenizer, task.prompt(r), task.label_words[r["label"]]) for r in rows])  # noqa: E731
        train(model, encode(task.train[: args.n_train]), args.train_lr, epochs=args.train_epochs, batch_size=8, seed=seed,
              eval_dataset=encode(task.dev))  # the dev items the calibrated rows use: keep the best epoch
        zero_prompts = [task.prompt(r) for r in task.test]
        rows[("0-shot", f"trained ln gamma (all heads, lr {args.train_lr:g})")] = scores(
            model.eval(), tokenizer, task, zero_prompts, [r["label"] for r in task.test]
        )
        stage("ln gamma trained and scored")
    model.unload()
    for (kind, label), (acc, gen, invalid) in rows.items():
        log(f"{name} {kind} {label}: label {acc:.3f} generated {gen:.3f} (not a label {invalid:.2f})")
    return rows, ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["sst2", "cb", "rte", "agnews"])
    parser.add_argument("--n-dev", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--train-lr", type=float, default=0.1,
        help="Adam moves ln gamma by about lr a step: 0.1 reaches the calibrated range (|ln gamma| <= 1.9) in ~20 steps",
    )
    parser.add_argument("--train-epochs", type=float, default=2)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--zero-shot-only", action="store_true", help="skip the few-shot prompts")
    parser.add_argument("--out", default=str(PLOTS), help="where the plots go")
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--quick", action="store_true", help=quick_help(QUICK))
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = apply_quick(parser.parse_args(), QUICK)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    base, tokenizer = headwise.load_bundled_model(attn_implementation="sdpa")
    log = lambda text: print(text, flush=True)  # noqa: E731
    runs = {seed: {name: run_task(name, args, base, tokenizer, log, seed) for name in args.tasks} for seed in args.seeds}

    method_of = lambda label: label.split(" (")[0]  # noqa: E731  the row name without its per-run gamma
    first = runs[args.seeds[0]]
    keys = list(dict.fromkeys((kind, method_of(label)) for rows, _ in first.values() for kind, label in rows))
    table = []
    for kind, method in keys:
        cells, per_seed_means = [], {seed: [] for seed in args.seeds}
        for name in args.tasks:
            found = []
            for seed in args.seeds:
                rows, _ = runs[seed][name]
                match = [(label, v) for (k, label), v in rows.items() if k == kind and method_of(label) == method]
                if match:
                    found.append(match[0])
                    per_seed_means[seed].append(match[0][1][0])
            if not found:
                cells.append("")
                continue
            details = [label[len(method):].strip(" ()").split(",")[0] for label, _ in found]
            gammas = "/".join(d.replace("gamma ", "") for d in details if d.startswith("gamma "))
            generated = sum(v[1] for _, v in found) / len(found)
            invalid = sum(v[2] for _, v in found) / len(found)
            cells.append(f"{mean_spread([v[0] for _, v in found])} / {generated:.2f} ({invalid:.0%} not a label)"
                         + (f" γ {gammas}" if gammas else ""))
        complete = all(len(v) == len(args.tasks) for v in per_seed_means.values())
        overall = mean_spread([sum(v) / len(v) for v in per_seed_means.values()], 3) if complete else ""
        table.append([kind, method, *cells, overall])
    header = ["prompt", "method", *[f"{n} (label / generated)" for n in args.tasks], "mean label acc"]
    text = markdown_table(header, table)
    ratios = [r for seed in args.seeds for _, r in runs[seed].values() if r is not None]
    overheads = f"{min(ratios):.3f}–{max(ratios):.3f} over {len(ratios)} runs" if ratios else "not measured"
    settings = (f"dev {args.n_dev} items (calibration only), test up to {args.n_test} items (CB: its 56 labelled val rows); "
                f"few-shot = {SHOTS} demonstrations; gamma grid {GRID}; trained ln gamma: {args.n_train} train prompts, "
                f"{args.train_epochs:g} epoch(s), lr {args.train_lr:g}; sdpa attention. Label accuracy counts every surface "
                f"form of a label. {seed_note(args.seeds)} Per set: label-constrained mean [min–max] / generated mean "
                f"(share of generations that are no label), γ per seed.")
    footer = f"Forward-pass overhead, adapted / bare (median of 9 interleaved runs, batch 8): {overheads}"
    publish("ZeroTuning on classification, SmolLM2-135M-Instruct", settings, text, args, footer=footer,
            header=header, rows=table, forward_overhead=ratios)


if __name__ == "__main__":
    main()
