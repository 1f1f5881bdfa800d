"""LoFiT vs PEFT LoRA / IA3 on SmolLM2-135M-Instruct, same splits, examples and steps for every method.

    python benchmarks/lofit_vs_peft.py [--tasks country-capital antonym english-french present-past]
                                       [--seeds 0 1 2] [--n-train 160] [--n-test 100] [--epochs 5] [--append]

Rows: untuned 0-shot and 10-shot ICL; PEFT LoRA r=8 on q_proj/v_proj and IA3 (PEFT defaults); LoFiT
at 3% and 10% of heads (two phases, library defaults; the time includes phase 1), LoFiT offsets on
random 10% of heads. ``--study`` adds LoFiT 10% with scales and offsets in phase 2, with the paper's raw
offset parameterisation (no head-RMS units), with phase-1 L1 strength 1e-2 (10x), with a 3x phase-1
budget, LoFiT at 20% of heads, and LoFiT trained on the answer tokens alone (no newline); ``--rows`` runs a subset. Every trained method holds out the same 20% of the
training examples and keeps its best epoch by validation loss. Each seed draws the split, the
initialisation and the batch order; tables give mean [min–max] over seeds. Accuracy is on held-out
items with zero-shot prompts (first token / greedy exact match). Training time is a ratio to LoRA's
in the same run.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import warnings
from pathlib import Path

from peft import IA3Config, LoraConfig, get_peft_model
from transformers import set_seed

sys.path.insert(0, str(Path(__file__).parent))
import headwise  # noqa: E402
from common import PLOTS, apply_quick, markdown_table, mean_spread, publish, quick_help, seed_note  # noqa: E402
from headwise.experiments.data import few_shot_prompt, load_word_pairs, training_set  # noqa: E402
from headwise.experiments.evaluate import first_token_accuracy, greedy_exact_match  # noqa: E402
from headwise.heads import head_count, top_k_heads  # noqa: E402
from headwise.experiments.training import split_for_validation, train  # noqa: E402
from lofit import select_heads, train_offsets  # noqa: E402

LORA = "PEFT LoRA r=8 (q,v)"
QUICK = {"tasks": ["country-capital"], "n_train": 32, "n_test": 20, "epochs": 2, "min_steps": 10, "rows": ["LoRA", "LoFiT 10% heads"]}


def evaluate(model, tokenizer, test, shots=()):
    model.eval()
    prompts = [few_shot_prompt(p["input"], shots) for p in test]
    answers = [p["output"] for p in test]
    return first_token_accuracy(model, tokenizer, prompts, answers, batch_size=8), greedy_exact_match(
        model, tokenizer, prompts, answers, batch_size=8, max_new_tokens=8
    )


def timed_training(run):
    start = time.perf_counter()
    model = run()
    return model, time.perf_counter() - start


def trainable(model) -> int:
    return headwise.trainable_parameters(model)["trainable"]


def run_task(name, args, tokenizer, log, seed):
    pairs = load_word_pairs(name, valid=0, test=0.3, seed=seed)
    test, train_pairs = pairs.test[: args.n_test], pairs.train[: args.n_train]
    data = training_set(tokenizer, train_pairs)
    fit_rows, valid_rows = split_for_validation(data, 0.2, seed)
    # the same split with the answer tokens alone (no newline after them; the default before 2026-11-30)
    bare_rows, bare_valid = split_for_validation(training_set(tokenizer, train_pairs, terminator=""), 0.2, seed)
    log(f"## {name}, seed {seed}: {len(fit_rows)} train + {len(valid_rows)} valid, {len(test)} test")
    base = lambda: headwise.load_bundled_model()[0]  # noqa: E731
    rows = {}

    model = base()
    rows["untuned 0-shot"] = (*evaluate(model, tokenizer, test), 0, None)
    rows["untuned 10-shot ICL"] = (*evaluate(model, tokenizer, test, train_pairs[:10]), 0, None)
    log(f"  baselines {rows['untuned 0-shot'][:2]} / {rows['untuned 10-shot ICL'][:2]}")

    def peft_method(config, lr):
        def run():
            set_seed(seed)
            peft_model = get_peft_model(base(), config)
            train(peft_model, fit_rows, lr, epochs=args.epochs, seed=seed, eval_dataset=valid_rows)
            return peft_model
        return run

    selection = {}

    def lofit(k, l1=args.l1, min_steps=args.min_steps, bare=False, **offset_args):
        phase1 = (l1, min_steps, bare)
        rows, valid = (bare_rows, bare_valid) if bare else (fit_rows, valid_rows)

        def run():
            model = base()
            if phase1 not in selection:  # phase 1 once per task, seed and setting: every k reads the same scores
                start = time.perf_counter()
                result = select_heads(model, rows, k=k, l1=l1, lr=args.select_lr, seed=seed, min_steps=min_steps)
                selection[phase1] = (result, time.perf_counter() - start)
            heads = top_k_heads(selection[phase1][0].scores, k)
            run.phase1_seconds = selection[phase1][1]
            return train_offsets(model, heads, rows, epochs=args.epochs, seed=seed, eval_dataset=valid, **offset_args)
        return run

    def random_heads(k):
        def run():
            model = base()
            site = headwise.find_head_sites(model)
            count = head_count(k, len(site), site[0].num_heads)
            heads = random.Random(seed).sample([(l, h) for l in range(len(site)) for h in range(site[0].num_heads)], count)
            return train_offsets(model, heads, fit_rows, epochs=args.epochs, seed=seed, eval_dataset=valid_rows)
        return run

    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    methods = [
        (LORA, peft_method(lora, args.lora_lr)),
        ("PEFT IA3", peft_method(IA3Config(task_type="CAUSAL_LM"), args.ia3_lr)),
        ("LoFiT 3% heads", lofit(0.03)),
        ("LoFiT 10% heads", lofit(0.10)),
        *([("LoFiT 10% heads, scale + offset", lofit(0.10, use_scale=True)),
           ("LoFiT 10% heads, raw offsets (paper)", lofit(0.10, relative=False, lr=args.raw_lr)),
           ("LoFiT 10% heads, phase 1 l1 1e-2", lofit(0.10, l1=1e-2)),
           ("LoFiT 10% heads, phase 1 >= 120 steps", lofit(0.10, min_steps=120)),
           ("LoFiT 20% heads", lofit(0.20)),
           ("LoFiT 10% heads, answer tokens only", lofit(0.10, bare=True))] if args.study else []),
        ("LoFiT 10% random heads", random_heads(0.10)),
    ]
    methods = [(label, run) for label, run in methods if not args.rows or any(part in label for part in args.rows)]
    for label, run in methods:
        model, seconds = timed_training(run)
        seconds += getattr(run, "phase1_seconds", 0)  # phase 1 is charged to every LoFiT row that uses it
        rows[label] = (*evaluate(model, tokenizer, test), trainable(model), seconds)
        log(f"  {label}: acc {rows[label][0]:.2f}/{rows[label][1]:.2f} params {rows[label][2]} {seconds:.0f}s")
        del model
    if (args.l1, args.min_steps, False) in selection and seed == args.seeds[0]:
        selection[(args.l1, args.min_steps, False)][0].plot(Path(args.out) / f"lofit_heads_{name}.png", title=f"LoFiT ||A||: {name}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["country-capital", "antonym", "english-french", "present-past"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--l1", type=float, default=1e-3)
    parser.add_argument("--select-lr", type=float, default=5e-3)
    parser.add_argument("--raw-lr", type=float, default=1e-2, help="lr of the raw-offset LoFiT row (the old default)")
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--ia3-lr", type=float, default=3e-3)
    parser.add_argument("--study", action="store_true",
                        help="add LoFiT rows: scale + offset, raw offsets, phase-1 l1 1e-2, phase 1 >= 120 steps, 20%% of heads")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="run only the trained rows whose label contains one of these strings (baselines always run)")
    parser.add_argument("--min-steps", type=int, default=40, help="phase-1 (head selection) steps at least")
    parser.add_argument("--out", default=str(PLOTS), help="where the plots go")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    parser.add_argument("--quick", action="store_true", help=quick_help(QUICK))
    parser.add_argument("--json", type=Path, help="also write the table and the per-seed figures here")
    args = apply_quick(parser.parse_args(), QUICK)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    _, tokenizer = headwise.load_bundled_model()
    log = lambda text: print(text, flush=True)  # noqa: E731

    runs = {seed: {task: run_task(task, args, tokenizer, log, seed) for task in args.tasks} for seed in args.seeds}
    labels = list(runs[args.seeds[0]][args.tasks[0]])
    header = ["method", "trainable params"] + [f"{t} (first / EM)" for t in args.tasks] + ["mean first-token", "mean EM", "train time / LoRA"]
    table = []
    for label in labels:
        cells = []
        for task in args.tasks:
            first = [runs[s][task][label][0] for s in args.seeds]
            exact = [runs[s][task][label][1] for s in args.seeds]
            cells.append(f"{mean_spread(first)} / {sum(exact) / len(exact):.2f}")
        task_mean = lambda seed, i: sum(runs[seed][t][label][i] for t in args.tasks) / len(args.tasks)  # noqa: E731
        times = [runs[s][t][label][3] for s in args.seeds for t in args.tasks]
        ratio = "" if times[0] is None or LORA not in labels else f"{sum(runs[s][t][label][3] / runs[s][t][LORA][3] for s in args.seeds for t in args.tasks) / len(times):.2f}"
        table.append([
            label, f"{runs[args.seeds[0]][args.tasks[0]][label][2]:,}", *cells,
            mean_spread([task_mean(s, 0) for s in args.seeds], 3), mean_spread([task_mean(s, 1) for s in args.seeds], 3), ratio,
        ])
    text = markdown_table(header, table)
    settings = (f"{args.n_train} training examples (80% trained on, 20% to keep the best epoch), {args.epochs:g} epochs "
                f"(batch 8) for every trained method; {args.n_test} held-out items per task, zero-shot `Q: x\\nA:` prompts. "
                f"{seed_note(args.seeds)} Per task: first-token mean [min–max] / exact-match mean.")
    publish("LoFiT vs PEFT on SmolLM2-135M-Instruct", settings, text, args, header=header, rows=table, runs=runs)


if __name__ == "__main__":
    main()
