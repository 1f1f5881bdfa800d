"""ZeroTuning on SmolLM2-135M-Instruct (or any decoder: --model) for SST-2: profile heads, calibrate gamma, compare.

    python examples/zerotuning_sst2.py [--task sst2] [--model ... --device ... --dtype ... --batch-size 8]

Profiles each head index (gamma=2 in every layer) on dev data, tunes the dominant kind, grid-searches
gamma with labels and, separately, without labels (minimum entropy over the label words), and reports
label-constrained test accuracy. Needs the reference data:
--data-dir ../shared/data or $HEADWISE_DATA.
"""

from __future__ import annotations

import argparse
import logging

import headwise
from _model_args import add_model_arguments, load_model
from headwise.experiments.classification import load_classification
from headwise.experiments.evaluate import label_constrained_accuracy
from zerotuning import ZeroTuningConfig, calibrate, entropy_score, label_accuracy_score, profile_heads, set_gamma


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data-dir", help="reference data folder (default: $HEADWISE_DATA), e.g. ../shared/data")
    parser.add_argument("--n-dev", type=int, default=32, help="calibration items")
    parser.add_argument("--n-test", type=int, default=100)
    add_model_arguments(parser, batch_size=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, tokenizer = load_model(args)
    task = load_classification(args.task, n_dev=args.n_dev, n_test=args.n_test, data_dir=args.data_dir)
    dev, test = [task.prompt(r) for r in task.dev], [task.prompt(r) for r in task.test]
    dev_labels, test_labels = [r["label"] for r in task.dev], [r["label"] for r in task.test]
    rows = args.batch_size
    accuracy = lambda m: label_constrained_accuracy(m, tokenizer, test, test_labels, task.label_words, batch_size=rows)  # noqa: E731

    print(f"untuned: {accuracy(model):.3f}")
    model = headwise.wrap(model, ZeroTuningConfig(heads="all"))
    supervised = label_accuracy_score(tokenizer, dev, dev_labels, task.label_words, batch_size=rows)
    profile = profile_heads(model, supervised, gamma=2.0)
    print("head indices, most helpful at gamma=2 first:", profile.ranked())
    profile.plot(f"out/zerotuning_profile_{args.task}.png")
    heads = profile.heads(0.5, num_layers=len(headwise.find_head_sites(model)))
    gamma, _ = calibrate(model, supervised, heads=heads)
    print(f"supervised ZeroTuning (gamma {gamma}): {accuracy(model):.3f}")
    set_gamma(model, 1.0)
    gamma, _ = calibrate(model, entropy_score(tokenizer, dev, task.label_words, batch_size=rows))
    print(f"unsupervised ZeroTuning (gamma {gamma}, all heads): {accuracy(model):.3f}")
    model.save_pretrained(f"out/zerotuning_{args.task}")


if __name__ == "__main__":
    main()
