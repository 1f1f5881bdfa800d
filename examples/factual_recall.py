"""Factual recall on SmolLM2-135M-Instruct (or any decoder: --model): which late heads push the right capital
down, and what scaling them down does to p(correct), accuracy and calibration.

    python examples/factual_recall.py [--data-dir ../shared/data] [--model ... --device ... --dtype ... --batch-size 64]

Direct logit attribution (final norm frozen from the clean run) ranks the heads of the last six layers
on "The capital of <country> is"; the most negative ones are zero-ablated (every position) on held-out
countries, and the fix is saved as a head-gate adapter. benchmarks/factual_recall.py runs it over seeds.
"""

from __future__ import annotations

import argparse

import torch

import headwise
import interventions as iv
from _model_args import add_model_arguments, load_model
from headwise.experiments.data import left_padded_batch, load_word_pairs
from headwise.experiments.evaluate import first_answer_token


def score(model, tokenizer, prompts, answers, batch_size: int):
    device = next(model.parameters()).device
    with torch.no_grad():
        logp = torch.cat([model(**left_padded_batch(tokenizer, prompts[i:i + batch_size], device)).logits[:, -1].float().log_softmax(-1).cpu()
                          for i in range(0, len(prompts), batch_size)])
    return logp[torch.arange(len(answers)), answers].exp().mean().item(), (logp.argmax(-1) == answers).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", help="reference data folder (default: $HEADWISE_DATA), e.g. ../shared/data")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=48, help="countries the heads are found on")
    add_model_arguments(parser, batch_size=64)
    args = parser.parse_args()
    model, tokenizer = load_model(args)
    task = load_word_pairs("country-capital", valid=0, test=0.4, data_dir=args.data_dir)
    prompts = lambda rows: [f"The capital of {row['input']} is" for row in rows]  # noqa: E731
    answers = lambda rows: torch.tensor([first_answer_token(tokenizer, p, r["output"]) for p, r in zip(prompts(rows), rows)])  # noqa: E731
    found_on = task.train[: args.n_train]
    dla = 0.0  # (L, H) mean direct logit attribution, in batches of --batch-size
    for start in range(0, len(found_on), args.batch_size):
        rows = found_on[start:start + args.batch_size]
        batch = left_padded_batch(tokenizer, prompts(rows), args.device)
        dla = dla + iv.direct_logit_attribution(model, batch["input_ids"], answers(rows), attention_mask=batch["attention_mask"]).sum(0)
    dla = dla / len(found_on)
    iv.plot_attribution(dla, "out/factual_recall_dla.png", title="DLA on the capital")
    late = dla.clone()
    late[:-6] = float("inf")  # the last six layers only
    heads = [(int(i) // dla.shape[1], int(i) % dla.shape[1]) for i in late.flatten().argsort()[: args.heads]]
    print("most negative late heads:", heads, [round(float(dla[h]), 3) for h in heads])
    test_prompts, test_answers = prompts(task.test), answers(task.test)
    print("held-out p(correct), accuracy, bare:    ", score(model, tokenizer, test_prompts, test_answers, args.batch_size))
    with iv.patch(model, {h: "zero" for h in heads}):
        print("held-out p(correct), accuracy, ablated: ", score(model, tokenizer, test_prompts, test_answers, args.batch_size))
    gated = headwise.wrap(model, iv.HeadGateConfig(heads=heads, scale=0.0))
    gated.save_pretrained("out/factual_recall_gate")
    print("saved the fix as a HEAD_GATE adapter in out/factual_recall_gate")


if __name__ == "__main__":
    main()
