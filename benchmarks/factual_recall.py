"""Factual recall (Lv et al. 2024) with headwise on SmolLM2-135M-Instruct (any decoder with --model): find the late-layer heads whose
direct logit attribution on the correct answer is negative, scale them down (a fixed scale, and a trained
head gate), and measure p(correct), accuracy and calibration (ECE) on held-out items, on country -> capital
and on a second factual task with the same heads (park -> country), against as many random late heads.

    .venv/bin/python benchmarks/factual_recall.py [--quick] [--seeds 0 1 2] [--heads 4] [--last-layers 6] [--json out.json]
                                                  [--model ... --device ... --dtype ... --attn-implementation ... --batch-size 32]

Per task and seed (benchmarks/splits.py, manifests in the JSON): 40% train, 20% validation, 40% test. The heads are
found and the gate trained on country -> capital's training items; the fixed scale is chosen by p(correct) on its
validation items; every figure is on the test items.

--batch-size: rows per scoring batch; the attribution and the gate's training batches take half as many.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from common import (PLOTS, add_model_arguments, apply_quick, load_model, markdown_table, mean_spread, model_note, publish,
                    quick_help, seed_note)
from splits import manifest

import headwise
import interventions as iv
from headwise.experiments.data import left_padded_batch, load_word_pairs
from headwise.experiments.evaluate import first_answer_token
from headwise.progress import disable_progress_bars

TASKS = {
    "country-capital": "The capital of {input} is",
    "park-country": "{input} is a national park in the country of",
}
SCALES = (0.0, 0.25, 0.5, 0.75)
VALID, TEST = 0.2, 0.4  # fractions of each task's pairs
QUICK = {"seeds": [0], "gate_steps": 10}


def items(tokenizer, task: str, rows: list[dict]) -> tuple[list[str], torch.Tensor]:
    prompts = [TASKS[task].format(input=row["input"]) for row in rows]
    return prompts, torch.tensor([first_answer_token(tokenizer, p, row["output"]) for p, row in zip(prompts, rows)])


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: list[str], batch_size: int = 32) -> torch.Tensor:
    out, device = [], next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        batch = left_padded_batch(tokenizer, prompts[start:start + batch_size], device)
        out.append(model(**batch).logits[:, -1].float().log_softmax(-1).cpu())
    return torch.cat(out)


def metrics(logprobs: torch.Tensor, answers: torch.Tensor, bins: int = 10) -> dict[str, float]:
    """p(correct first token), top-1 accuracy, and expected calibration error of the top-1 confidence."""
    probs = logprobs.exp()
    confidence, predicted = probs.max(-1)
    correct = (predicted == answers).float()
    ece = 0.0
    for low in range(bins):
        inside = (confidence > low / bins) & (confidence <= (low + 1) / bins)
        if inside.any():
            ece += inside.float().mean() * (confidence[inside].mean() - correct[inside].mean()).abs()
    return {"p_correct": float(probs[torch.arange(len(answers)), answers].mean()), "accuracy": float(correct.mean()), "ece": float(ece)}


def attribution(model, tokenizer, prompts, answers, batch_size: int = 16) -> torch.Tensor:
    """(L, H) mean direct logit attribution onto each item's answer at the last prompt token."""
    total, device = None, next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        batch = left_padded_batch(tokenizer, prompts[start:start + batch_size], device)
        dla = iv.direct_logit_attribution(model, batch["input_ids"], answers[start:start + batch_size], attention_mask=batch["attention_mask"])
        total = dla.sum(0) if total is None else total + dla.sum(0)
    return total / len(prompts)


def train_gate(model, tokenizer, heads, prompts, answers, steps: int, seed: int, batch_size: int = 16):
    """A trainable head gate on ``heads`` fitted by cross-entropy on the first answer token."""
    torch.manual_seed(seed)
    gated = headwise.wrap(model, iv.HeadGateConfig(heads=heads, scale=1.0, trainable=True))
    optimizer = torch.optim.Adam([p for p in gated.parameters() if p.requires_grad], lr=0.05)
    order, device = random.Random(seed), next(model.parameters()).device
    for _ in range(steps):
        chosen = order.sample(range(len(prompts)), min(batch_size, len(prompts)))
        batch = left_padded_batch(tokenizer, [prompts[i] for i in chosen], device)
        logits = gated(**batch).logits[:, -1].float()
        loss = torch.nn.functional.cross_entropy(logits, answers[chosen].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return gated


def task_splits(task: str, seed: int, args):
    """``task``'s train / validation / test pairs at ``seed`` (what tests/test_benchmark_splits.py checks)."""
    return load_word_pairs(task, valid=VALID, test=TEST, seed=seed)


def arguments(argv=None):
    """The command line (``argv``, default sys.argv), ``--quick`` applied."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help(QUICK))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--heads", type=int, default=4, help="negative heads to scale down")
    parser.add_argument("--last-layers", type=int, default=6, help="look for them in this many final layers")
    parser.add_argument("--gate-steps", type=int, default=60)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--out", type=Path, default=PLOTS, help="where the plot goes (default benchmarks/plots)")
    parser.set_defaults(tasks=list(TASKS))
    add_model_arguments(parser, batch_size=32)
    return apply_quick(parser.parse_args(argv), QUICK, argv)


def main() -> None:
    args = arguments()
    disable_progress_bars()
    half = max(1, args.batch_size // 2)  # the attribution and gate-training batches (16 by default)

    model, tokenizer = load_model(args)
    num_layers = len(headwise.find_head_sites(model))
    num_heads = headwise.find_head_sites(model)[0].num_heads
    last_layers = min(args.last_layers, num_layers)
    late = [(layer, head) for layer in range(num_layers - last_layers, num_layers) for head in range(num_heads)]
    results: dict[str, dict[str, list]] = {}
    chosen_heads = {}
    manifests: dict[str, dict] = {}
    dla_maps = []
    fixed_scales = []

    def record(task, setting, values):
        for key, value in values.items():
            results.setdefault(task, {}).setdefault(setting, {}).setdefault(key, []).append(value)

    for seed in args.seeds:
        splits = {task: task_splits(task, seed, args) for task in TASKS}
        for task, drawn in splits.items():
            manifests[f"{task}/{seed}"] = manifest(task, seed, train=drawn.train, valid=drawn.valid, test=drawn.test)
        train_prompts, train_answers = items(tokenizer, "country-capital", splits["country-capital"].train)
        valid_prompts, valid_answers = items(tokenizer, "country-capital", splits["country-capital"].valid)
        dla = attribution(model, tokenizer, train_prompts, train_answers, half)
        dla_maps.append(dla)
        ranked = sorted(late, key=lambda pair: float(dla[pair]))
        heads = [pair for pair in ranked[: args.heads] if dla[pair] < 0]
        chosen_heads[seed] = heads
        rng = random.Random(seed)
        random_heads = rng.sample([pair for pair in late if pair not in heads], len(heads))

        def score(scale, on):
            with iv.patch(model, {pair: scale for pair in on}):
                return metrics(next_token_logprobs(model, tokenizer, valid_prompts, args.batch_size), valid_answers)["p_correct"]

        best_scale = max(SCALES, key=lambda s: score(s, heads))
        fixed_scales.append(best_scale)
        gated = train_gate(model, tokenizer, heads, train_prompts, train_answers, args.gate_steps, seed, half)
        gate = iv.gate_scales(gated)
        gated.unload()
        for task in TASKS:
            prompts, answers = items(tokenizer, task, splits[task].test)
            logprobs = lambda: next_token_logprobs(model, tokenizer, prompts, args.batch_size)  # noqa: E731
            record(task, "bare model", metrics(logprobs(), answers))
            for name, on in (("negative heads", heads), ("random late heads", random_heads)):
                with iv.patch(model, {pair: best_scale for pair in on}):
                    record(task, f"{name}, fixed scale", metrics(logprobs(), answers))
            with iv.patch(model, {pair: float(gate[pair]) for pair in heads}):
                record(task, "negative heads, trained gate", metrics(logprobs(), answers))
        print(f"seed {seed}: heads {heads} (DLA {[round(float(dla[p]), 3) for p in heads]}), fixed scale {best_scale}, "
              f"gate {[round(float(gate[p]), 2) for p in heads]}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.out / "factual_recall_dla.png"
    iv.plot_attribution(torch.stack(dla_maps), plot, title="DLA on the capital (mean over seeds)", top=args.heads)
    settings = (f"{model_note(args)}. " + seed_note(args.seeds) + f" Heads: the {args.heads} most negative mean DLA on the "
                f"capital in the last {last_layers} layers, found on the training countries; the fixed scale is the one of "
                "{0, 0.25, 0.5, 0.75} with the best validation p(correct) (per seed: " + ", ".join(f"{s}" for s in fixed_scales)
                + f"; random heads get the same); the gate: {args.gate_steps} Adam steps on the training items. Splits per "
                f"task and seed: {1 - VALID - TEST:.0%} train, {VALID:.0%} validation, {TEST:.0%} test (manifests in the "
                f"JSON); every figure is on the test items. Plot: `{plot.name}`.")
    tables = []
    for task in TASKS:
        rows = []
        for setting, values in results[task].items():
            rows.append([setting, mean_spread(values["p_correct"], 3), mean_spread(values["accuracy"], 3), mean_spread(values["ece"], 3)])
        tables.append(f"## {task}\n\n" + markdown_table(["setting", "p(correct)", "accuracy", "ECE"], rows))
    publish("Factual recall: scaling down negative late heads", settings, "\n\n".join(tables), args, results=results,
            heads={str(k): v for k, v in chosen_heads.items()}, splits=manifests)


if __name__ == "__main__":
    main()
