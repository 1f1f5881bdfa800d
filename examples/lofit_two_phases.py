"""LoFiT's two phases on SmolLM2-135M-Instruct with a Function Vectors task, and a heatmap of the chosen heads.

    python examples/lofit_two_phases.py [--task antonym] [--k 0.03] [--model ... --device ... --dtype ... --batch-size 8]

Phase 1 trains a scale vector on all 270 heads with an L1 penalty and keeps the heads with the
largest norms; phase 2 trains offset vectors on those heads only. Needs the reference data (--data-dir
../shared/data or $HEADWISE_DATA) for the task file. Writes out/lofit_heads_<task>.png and out/lofit_<task>/.
"""

from __future__ import annotations

import argparse
import logging

from _model_args import add_model_arguments, load_model, trainer_device
from headwise.experiments.data import few_shot_prompt, load_word_pairs, training_set
from headwise.experiments.evaluate import first_token_accuracy
from lofit import select_heads, train_offsets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="antonym")
    parser.add_argument("--data-dir", help="reference data folder (default: $HEADWISE_DATA), e.g. ../shared/data")
    parser.add_argument("--k", type=float, default=0.03, help="fraction of heads (or a count >= 1)")
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--min-steps", type=int, default=40, help="phase 1: at least this many optimiser steps")
    parser.add_argument("--epochs", type=float, default=5, help="phase 2 epochs (the best one is kept)")
    add_model_arguments(parser, batch_size=8)  # the training batch; scoring runs twice as many rows
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    k = int(args.k) if args.k >= 1 else args.k

    model, tokenizer = load_model(args)
    task = load_word_pairs(args.task, valid=0, test=args.n_test, data_dir=args.data_dir)
    data = training_set(tokenizer, task.train[: args.n_train])
    prompts, answers = [few_shot_prompt(p["input"]) for p in task.test], [p["output"] for p in task.test]
    before = first_token_accuracy(model, tokenizer, prompts, answers, batch_size=2 * args.batch_size)

    training = {"batch_size": args.batch_size, **trainer_device(args)}
    selection = select_heads(model, data, k=k, min_steps=args.min_steps, **training)
    print("chosen heads (layer, head), best first:", selection.heads)
    print("heatmap:", selection.plot(f"out/lofit_heads_{args.task}.png", title=f"LoFiT ||A||: {args.task}"))

    model = train_offsets(model, selection.heads, data, epochs=args.epochs, **training)  # head-RMS units, best epoch kept
    model.print_trainable_parameters()
    after = first_token_accuracy(model.eval(), tokenizer, prompts, answers, batch_size=2 * args.batch_size)
    model.save_pretrained(f"out/lofit_{args.task}")
    print(f"{args.task}: first-token accuracy on {len(prompts)} held-out items: untuned {before:.2f} -> LoFiT {after:.2f}")


if __name__ == "__main__":
    main()
