"""Soft injection on SmolLM2-135M-Instruct (or any decoder: --model): a zero-shot prompt that behaves like a 10-shot one.

    python examples/soft_injection_demo.py [--task antonym] [--steps 150] [--model ... --device ... --dtype ... --batch-size 8]

Builds the task embedding from 50 ten-shot prompts, fits the per-head mixing weights on zero-shot
prompts (keeping the best validation checkpoint), compares 0-shot / 10-shot / injected accuracy on
held-out items, saves the adapter, and writes the alpha heatmap. Needs the reference data:
--data-dir ../shared/data or $HEADWISE_DATA.
"""

from __future__ import annotations

import argparse
import logging

from _model_args import add_model_arguments, load_model
from headwise.experiments.data import few_shot_prompt, load_word_pairs
from headwise.experiments.evaluate import first_token_accuracy
from headwise.experiments.plots import plot_head_scores
from soft_injection import SoftInjectionConfig, alpha_matrix, fit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="antonym")
    parser.add_argument("--data-dir", help="reference data folder (default: $HEADWISE_DATA), e.g. ../shared/data")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--n-prompts", type=int, default=50, help="ten-shot prompts averaged into the task embedding")
    parser.add_argument("--n-valid", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=100)
    add_model_arguments(parser, batch_size=8)  # the fitting batch; scoring runs twice as many rows
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, tokenizer = load_model(args)
    task = load_word_pairs(args.task, valid=args.n_valid, test=args.n_test, seed=0, data_dir=args.data_dir)
    answers = [p["output"] for p in task.test]
    zero = [few_shot_prompt(p["input"]) for p in task.test]
    ten = [few_shot_prompt(p["input"], task.train[i * 10 % len(task.train):][:10]) for i, p in enumerate(task.test)]
    accuracy = lambda m, prompts: first_token_accuracy(m, tokenizer, prompts, answers, batch_size=2 * args.batch_size)  # noqa: E731
    print(f"0-shot  {accuracy(model, zero):.2f}")
    print(f"10-shot {accuracy(model, ten):.2f}")
    model, history = fit(model, tokenizer, task.train, task.valid, config=SoftInjectionConfig(n_prompts=args.n_prompts),
                         steps=args.steps, batch_size=args.batch_size)
    print(f"soft injection, 0-shot prompt {accuracy(model, zero):.2f} "
          f"(best validation loss {history.best_loss:.3f} at step {history.best_step})")
    model.save_pretrained(f"out/soft_injection_{args.task}")
    print("alpha heatmap:", plot_head_scores(alpha_matrix(model), f"out/soft_injection_alpha_{args.task}.png", label="alpha"))


if __name__ == "__main__":
    main()
