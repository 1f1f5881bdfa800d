"""Soft injection on SmolLM2-135M-Instruct: a zero-shot prompt that behaves like a 10-shot one.

    python examples/soft_injection_demo.py [--task antonym] [--steps 150]

Builds the task embedding from 50 ten-shot prompts, fits the per-head mixing weights on zero-shot
prompts (keeping the best validation checkpoint), compares 0-shot / 10-shot / injected accuracy on
held-out items, saves the adapter, and writes the alpha heatmap. Needs the reference data:
--data-dir ../shared/data or $HEADWISE_DATA.
"""

from __future__ import annotations

import argparse
import logging

import headwise
from headwise.experiments.data import few_shot_prompt, load_word_pairs
from headwise.experiments.evaluate import first_token_accuracy
from headwise.experiments.plots import plot_head_scores
from soft_injection import alpha_matrix, fit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="antonym")
    parser.add_argument("--data-dir", help="reference data folder (default: $HEADWISE_DATA), e.g. ../shared/data")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, tokenizer = headwise.load_bundled_model()
    task = load_word_pairs(args.task, valid=50, test=100, seed=0, data_dir=args.data_dir)
    answers = [p["output"] for p in task.test]
    zero = [few_shot_prompt(p["input"]) for p in task.test]
    ten = [few_shot_prompt(p["input"], task.train[i * 10 % len(task.train):][:10]) for i, p in enumerate(task.test)]
    print(f"0-shot  {first_token_accuracy(model, tokenizer, zero, answers):.2f}")
    print(f"10-shot {first_token_accuracy(model, tokenizer, ten, answers):.2f}")
    model, history = fit(model, tokenizer, task.train, task.valid, steps=args.steps)
    print(f"soft injection, 0-shot prompt {first_token_accuracy(model, tokenizer, zero, answers):.2f} "
          f"(best validation loss {history.best_loss:.3f} at step {history.best_step})")
    model.save_pretrained(f"out/soft_injection_{args.task}")
    print("alpha heatmap:", plot_head_scores(alpha_matrix(model), f"out/soft_injection_alpha_{args.task}.png", label="alpha"))


if __name__ == "__main__":
    main()
