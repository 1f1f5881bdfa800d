"""LoFiT's two phases on SmolLM2-135M-Instruct with a Function Vectors task, and a heatmap of the chosen heads.

    python examples/lofit_two_phases.py [--task antonym] [--k 0.03]

Phase 1 trains a scale vector on all 270 heads with an L1 penalty and keeps the heads with the
largest norms; phase 2 trains offset vectors on those heads only. Needs the reference data (--data-dir
../shared/data or $HEADWISE_DATA) for the task file. Writes out/lofit_heads_<task>.png and out/lofit_<task>/.
"""

from __future__ import annotations

import argparse
import logging

import headwise
from headwise.experiments.data import few_shot_prompt, load_word_pairs, training_set
from headwise.experiments.evaluate import first_token_accuracy
from lofit import select_heads, train_offsets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="antonym")
    parser.add_argument("--data-dir", help="reference data folder (default: $HEADWISE_DATA), e.g. ../shared/data")
    parser.add_argument("--k", type=float, default=0.03, help="fraction of heads (or a count >= 1)")
    parser.add_argument("--n-train", type=int, default=160)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    k = int(args.k) if args.k >= 1 else args.k

    model, tokenizer = headwise.load_bundled_model()
    task = load_word_pairs(args.task, valid=0, test=100, data_dir=args.data_dir)
    data = training_set(tokenizer, task.train[: args.n_train])
    prompts, answers = [few_shot_prompt(p["input"]) for p in task.test], [p["output"] for p in task.test]
    before = first_token_accuracy(model, tokenizer, prompts, answers)

    selection = select_heads(model, data, k=k)
    print("chosen heads (layer, head), best first:", selection.heads)
    print("heatmap:", selection.plot(f"out/lofit_heads_{args.task}.png", title=f"LoFiT ||A||: {args.task}"))

    model = train_offsets(model, selection.heads, data)  # offsets in head-RMS units, best epoch kept
    model.print_trainable_parameters()
    after = first_token_accuracy(model.eval(), tokenizer, prompts, answers)
    model.save_pretrained(f"out/lofit_{args.task}")
    print(f"{args.task}: first-token accuracy on {len(prompts)} held-out items: untuned {before:.2f} -> LoFiT {after:.2f}")


if __name__ == "__main__":
    main()
