"""Colored Objects on SmolLM2-135M-Instruct: find heads by activation patching, then repair the task by
forcing a head's attention onto the distractor colours (the circuit-reuse paper's intervention).

    python examples/circuit_reuse.py [--head 24 4]

benchmarks/circuit_reuse.py does the full search over seeds; this runs one head on 60 items.
"""

from __future__ import annotations

import argparse

import torch

import headwise
import interventions as iv
from headwise.experiments.colored_objects import COLOURS, make_items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--head", type=int, nargs=2, default=[24, 4], help="layer and head to override")
    parser.add_argument("--items", type=int, default=60)
    args = parser.parse_args()
    model, tokenizer = headwise.load_bundled_model()
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

    def accuracy() -> float:
        with torch.no_grad():
            logits = model(input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"]).logits[:, -1]
        return (logits.gather(1, options).argmax(-1) == answers).float().mean().item()

    print(f"accuracy over the three listed colours: {accuracy():.3f} (chance 0.333)")
    head = tuple(args.head)
    with iv.override_attention(model, {head: distractors}, queries=last):
        print(f"head {head} attending only to the distractor colours: {accuracy():.3f}")
    with iv.block_keys(model, [head], keys=distractors, queries=last):
        print(f"head {head} blocked from the distractor colours: {accuracy():.3f}")


if __name__ == "__main__":
    main()
