"""LoFiT vs PEFT LoRA / IA3 on SmolLM2-135M-Instruct, same splits, examples and steps for every method.

    python benchmarks/lofit_vs_peft.py [--tasks country-capital antonym english-french present-past]
                                       [--n-train 160] [--n-test 100] [--epochs 5] [--append]

Rows: untuned 0-shot and 10-shot ICL, LoFiT at 3% and 10% of heads (two phases; the time includes
phase 1), LoFiT offsets on random 10% of heads, LoRA r=8 on q_proj/v_proj, IA3 (PEFT defaults).
Accuracy is on held-out items with zero-shot prompts (first token / greedy exact match). Training
time is a ratio to LoRA's in the same run; memory is the peak resident memory added while training.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import warnings
from pathlib import Path

import torch
from peft import IA3Config, LoraConfig, get_peft_model
from transformers import set_seed

sys.path.insert(0, str(Path(__file__).parent))
import headwise  # noqa: E402
from common import machine, markdown_table, peak_memory  # noqa: E402
from headwise.data import few_shot_prompt, load_word_pairs, training_set  # noqa: E402
from headwise.evaluate import first_token_accuracy, greedy_exact_match  # noqa: E402
from headwise.heads import head_count, top_k_heads  # noqa: E402
from headwise.training import train  # noqa: E402
from lofit import select_heads, train_offsets  # noqa: E402

RESULTS = Path(__file__).parent / "RESULTS.md"


def evaluate(model, tokenizer, test, shots=()):
    model.eval()
    prompts = [few_shot_prompt(p["input"], shots) for p in test]
    answers = [p["output"] for p in test]
    return first_token_accuracy(model, tokenizer, prompts, answers, batch_size=8), greedy_exact_match(
        model, tokenizer, prompts, answers, batch_size=8, max_new_tokens=8
    )


def timed_training(run):
    start = time.perf_counter()
    with peak_memory() as memory:
        model = run()
    return model, time.perf_counter() - start, memory["peak_mib"]


def trainable(model) -> int:
    return headwise.trainable_parameters(model)["trainable"]


def run_task(name, args, tokenizer, log):
    pairs = load_word_pairs(name, valid=0, test=0.3, seed=args.seed)
    test, train_pairs = pairs.test[: args.n_test], pairs.train[: args.n_train]
    data = training_set(tokenizer, train_pairs)
    steps = -(-len(data) // 8) * args.epochs
    log(f"## {name}: {len(train_pairs)} train, {len(test)} test, {steps} steps")
    base = lambda: headwise.load_bundled_model()[0]  # noqa: E731
    rows = {}

    model = base()
    rows["untuned 0-shot"] = (*evaluate(model, tokenizer, test), 0, None, None)
    shots = train_pairs[:10]
    rows["untuned 10-shot ICL"] = (*evaluate(model, tokenizer, test, shots), 0, None, None)
    log(f"  baselines {rows['untuned 0-shot'][:2]} / {rows['untuned 10-shot ICL'][:2]}")

    def lora():
        set_seed(args.seed)
        peft_model = get_peft_model(base(), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        train(peft_model, data, args.lora_lr, epochs=args.epochs, seed=args.seed)
        return peft_model

    def ia3():
        set_seed(args.seed)
        peft_model = get_peft_model(base(), IA3Config(task_type="CAUSAL_LM"))
        train(peft_model, data, args.ia3_lr, epochs=args.epochs, seed=args.seed)
        return peft_model

    selection = {}

    def lofit(k, lr, label):
        def run():
            model = base()
            if "result" not in selection:  # phase 1 once per task: every k reads the same scores
                start = time.perf_counter()
                selection["result"] = select_heads(
                    model, data, k=k, l1=args.l1, lr=args.select_lr, epochs=args.select_epochs, seed=args.seed
                )
                selection["seconds"], selection["computed_in"] = time.perf_counter() - start, label
            heads = top_k_heads(selection["result"].scores, k)
            return train_offsets(model, heads, data, lr=lr, epochs=args.epochs, seed=args.seed)
        return run

    def random_heads(k, lr):
        def run():
            model = base()
            site = headwise.find_head_sites(model)
            n_layers, n_heads = len(site), site[0].num_heads
            count = head_count(k, n_layers, n_heads)
            heads = random.Random(args.seed).sample([(l, h) for l in range(n_layers) for h in range(n_heads)], count)
            return train_offsets(model, heads, data, lr=lr, epochs=args.epochs, seed=args.seed)
        return run

    methods = [
        ("PEFT LoRA r=8 (q,v)", lora),
        ("PEFT IA3", ia3),
        ("LoFiT 3% heads", lofit(0.03, args.lofit_lr_small, "LoFiT 3% heads")),
        ("LoFiT 10% heads", lofit(0.10, args.lofit_lr, "LoFiT 10% heads")),
        ("LoFiT 10% random heads", random_heads(0.10, args.lofit_lr)),
    ]
    for label, run in methods:
        model, seconds, memory = timed_training(run)
        if label.startswith("LoFiT") and "random" not in label and selection["computed_in"] != label:
            seconds += selection["seconds"]  # phase 1 is charged to every LoFiT row that uses it
        rows[label] = (*evaluate(model, tokenizer, test), trainable(model), seconds, memory)
        log(f"  {label}: acc {rows[label][0]:.2f}/{rows[label][1]:.2f} params {rows[label][2]} {seconds:.0f}s {memory:.0f} MiB")
        del model
    if "result" in selection:
        selection["result"].plot(Path(args.out) / f"lofit_heads_{name}.png", title=f"LoFiT ||A||: {name}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["country-capital", "antonym", "english-french", "present-past"])
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l1", type=float, default=1e-3)
    parser.add_argument("--select-lr", type=float, default=5e-3)
    parser.add_argument("--select-epochs", type=float, default=2)
    parser.add_argument("--lofit-lr", type=float, default=1e-2)
    parser.add_argument("--lofit-lr-small", type=float, default=5e-2)
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--ia3-lr", type=float, default=3e-3)
    parser.add_argument("--out", default="benchmarks/plots")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.manual_seed(args.seed)
    _, tokenizer = headwise.load_bundled_model()
    log = lambda text: print(text, flush=True)  # noqa: E731

    all_rows = {task: run_task(task, args, tokenizer, log) for task in args.tasks}
    labels = list(next(iter(all_rows.values())))
    header = ["method", "trainable params"] + [f"{t} (first / EM)" for t in args.tasks] + ["mean first-token", "train time / LoRA", "peak MiB"]
    table = []
    for label in labels:
        per_task = [all_rows[t][label] for t in args.tasks]
        params = per_task[0][2]
        times = [r[3] for r in per_task]
        ratio = "" if times[0] is None else f"{sum(r[3] / all_rows[t]['PEFT LoRA r=8 (q,v)'][3] for t, r in zip(args.tasks, per_task)) / len(args.tasks):.2f}"
        memory = "" if per_task[0][4] is None else f"{max(r[4] for r in per_task):.0f}"
        mean = sum(r[0] for r in per_task) / len(per_task)
        table.append([label, f"{params:,}", *[f"{r[0]:.2f} / {r[1]:.2f}" for r in per_task], f"{mean:.3f}", ratio, memory])
    text = markdown_table(header, table)
    print("\n" + text)
    if args.append:
        command = "python " + " ".join(sys.argv)
        with RESULTS.open("a") as handle:
            handle.write(
                f"\n## LoFiT vs PEFT on SmolLM2-135M-Instruct ({time.strftime('%Y-%m-%d')})\n\n"
                f"Command: `{command}`  \nMachine: {machine()}  \n"
                f"{args.n_train} training examples, {args.epochs:g} epochs (batch 8) for every trained method; "
                f"{args.n_test} held-out items per task, zero-shot `Q: x\\nA:` prompts.\n\n{text}\n"
            )


if __name__ == "__main__":
    main()
