"""Colored Objects on SmolLM2-135M-Instruct (or any decoder: --model): find heads by activation patching, then
repair the task by forcing a head's attention onto the distractor colours (the circuit-reuse paper's intervention).

    python examples/circuit_reuse.py [--head 24 4] [--model ... --device ... --dtype ... --batch-size 60]

benchmarks/circuit_reuse.py does the full search over seeds; this runs one head on 60 items. The default head
is SmolLM2-135M-Instruct's; on another model name one with --head.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

import headwise
import interventions as iv
from _model_args import add_model_arguments, load_model
from headwise.experiments.colored_objects import COLOURS, make_items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--head", type=int, nargs=2, default=[24, 4], help="layer and head to override")
    parser.add_argument("--items", type=int, default=60)
    add_model_arguments(parser, batch_size=60)
    args = parser.parse_args()
    model, tokenizer = load_model(args)
    sites = headwise.find_head_sites(model)
    if not (0 <= args.head[0] < len(sites) and 0 <= args.head[1] < sites[0].num_heads):
        parser.error(f"--head {args.head[0]} {args.head[1]} is not in this model's {len(sites)} layers x "
                     f"{sites[0].num_heads} heads: name another")
    tokenizer.padding_side = "left"
    items = make_items(args.items, seed=0, tokens_of=lambda w: len(tokenizer(" " + w, add_special_tokens=False).input_ids))
    texts = [item.text for item in items]
    encoding = tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=True, add_special_tokens=False)
    colour_id = {c: tokenizer(" " + c, add_special_tokens=False).input_ids[0] for c in COLOURS}
    options = torch.tensor([[colour_id[c] for c in item.colours] for item in items])
    answers = torch.tensor([item.answer for item in items])
    last = iv.last_token(encoding["attention_mask"])
    distractors = (iv.span_positions(encoding, texts, [i.distractor_spans[0] for i in items])
                   | iv.span_positions(encoding, texts, [i.distractor_spans[1] for i in items]))

    def accuracy(edit=None) -> float:
        """Accuracy over the three listed colours, in batches of --batch-size rows, each under ``edit(rows)``."""
        hits = []
        for start in range(0, len(items), args.batch_size):
            rows = slice(start, start + args.batch_size)
            with torch.no_grad(), edit(rows) if edit is not None else contextlib.nullcontext():
                logits = model(input_ids=encoding["input_ids"][rows].to(args.device),
                               attention_mask=encoding["attention_mask"][rows].to(args.device)).logits[:, -1].float().cpu()
            hits.append(logits.gather(1, options[rows]).argmax(-1) == answers[rows])
        return torch.cat(hits).float().mean().item()

    print(f"accuracy over the three listed colours: {accuracy():.3f} (chance 0.333)")
    head = tuple(args.head)
    override = accuracy(lambda rows: iv.override_attention(model, {head: distractors[rows]}, queries=last[rows]))
    print(f"head {head} attending only to the distractor colours: {override:.3f}")
    blocked = accuracy(lambda rows: iv.block_keys(model, [head], keys=distractors[rows], queries=last[rows]))
    print(f"head {head} blocked from the distractor colours: {blocked:.3f}")


if __name__ == "__main__":
    main()
