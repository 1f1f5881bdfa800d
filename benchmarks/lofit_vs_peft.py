"""LoFiT vs PEFT LoRA / IA3: the same splits, examples, epochs and learning-rate sweep for every method.

    python benchmarks/lofit_vs_peft.py [--tasks country-capital antonym english-french present-past] [--seeds 0 1 2]
                                       [--n-train 160] [--n-valid 40] [--n-test 100] [--epochs 5] [--sweep 0.333 1 3]
                                       [--model ...] [--device ...] [--json out.json] [--append]

Per task and seed (benchmarks/splits.py): train / validation / test drawn by the seed and recorded in the JSON.
Rows: untuned 0-shot and 10-shot ICL (demonstrations drawn per query from the training split); PEFT LoRA r=8 on
q_proj/v_proj and IA3 (PEFT defaults); LoFiT at 3% and 10% of heads (two phases, library defaults; the time
includes phase 1) and LoFiT offsets on random 10% of heads. Every trained method runs at each learning rate of
``--sweep`` times its default (LoRA 1e-3, IA3 3e-3, LoFiT 0.2 in head-RMS units), keeps its best epoch by
validation loss and then the learning rate whose kept adapter has the lowest validation loss (answer tokens'
mean NLL, the same function for every method): the test items are never looked at to choose. ``--study`` adds
LoFiT variants (scale + offset, the paper's raw offsets, phase-1 l1 1e-2, a 3x phase-1 budget, 20% of heads,
answer tokens only), chosen the same way. Accuracy on test items with zero-shot prompts (first token / greedy
exact match); differences are paired (same items) with a 95% bootstrap interval over tasks and seeds. Training
time is a ratio to LoRA's (at its chosen learning rate) in the same run.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import sys
import time
import warnings
from pathlib import Path

import torch
from peft import IA3Config, LoraConfig, get_peft_model
from transformers import set_seed

sys.path.insert(0, str(Path(__file__).parent))
import headwise  # noqa: E402
from common import (add_run_arguments, apply_quick, headline_row, interval, load_model, markdown_table,  # noqa: E402
                    mean_spread, model_note, paired_bootstrap, publish, ResultCache, seed_note)
from headwise.experiments.data import PaddingCollator, few_shot_prompt, training_set  # noqa: E402
from headwise.experiments.evaluate import first_token_hits, greedy_answers, is_exact_match  # noqa: E402
from headwise.experiments.training import pad_token_id_of, train  # noqa: E402
from headwise.heads import head_count, top_k_heads  # noqa: E402
from lofit import select_heads, train_offsets  # noqa: E402
from splits import demonstrations, manifest, word_pair_splits  # noqa: E402

LORA = "PEFT LoRA r=8 (q,v)"
QUICK = {"tasks": ["country-capital"], "n_train": 32, "n_valid": 12, "n_test": 20, "epochs": 2, "min_steps": 10,
         "rows": ["LoRA", "LoFiT 10% heads"], "sweep": [1.0]}


def item_scores(model, tokenizer, test, batch_size: int, shots_for=lambda i: []) -> tuple[list[float], list[float]]:
    """Per test item: (first-token hit, greedy exact match)."""
    model.eval()
    prompts = [few_shot_prompt(p["input"], shots_for(i)) for i, p in enumerate(test)]
    answers = [p["output"] for p in test]
    first = first_token_hits(model, tokenizer, prompts, answers, batch_size=batch_size)
    texts = greedy_answers(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=8)
    return [float(h) for h in first], [float(is_exact_match(t, a)) for t, a in zip(texts, answers)]


@torch.no_grad()
def validation_loss(model, rows, batch_size: int) -> float:
    """Mean NLL of the answer tokens (and their newline) over the validation rows: how every method's learning
    rate is chosen."""
    model.eval()
    device = next(model.parameters()).device
    collate = PaddingCollator(pad_token_id_of(model))
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))]).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        target = labels[:, 1:]
        mask = target != -100
        nll = torch.nn.functional.cross_entropy(logits[mask], target[mask], reduction="sum")
        total, tokens = total + nll.item(), tokens + int(mask.sum())
    return total / tokens


def mean(values) -> float:
    return sum(values) / len(values)


def task_splits(name: str, seed: int, args):
    """One task's train / validation / test items at ``seed`` (what tests/test_benchmark_splits.py checks)."""
    return word_pair_splits(name, seed, args.n_train, args.n_valid, args.n_test)


def run_task(name, args, base, tokenizer, log, seed):
    """Every row of one task at one seed: the split's manifest and, per row, its per-item test scores (and for a
    trained row the chosen learning rate, its validation loss, trainable parameters and training seconds)."""
    task = task_splits(name, seed, args)
    test = task.test
    fit_rows, valid_rows = training_set(tokenizer, task.train), training_set(tokenizer, task.valid)
    # the same items with the answer tokens alone (no newline after them; the default before 2026-11-30)
    bare_rows, bare_valid = training_set(tokenizer, task.train, terminator=""), training_set(tokenizer, task.valid, terminator="")
    log(f"## {name}, seed {seed}: {len(task.train)} train + {len(task.valid)} valid, {len(test)} test")
    rows = {"splits": manifest(name, seed, train=task.train, valid=task.valid, test=test)}
    on_device = {"use_cpu": args.device == "cpu"}

    model = base()
    rows["untuned 0-shot"] = {"scores": item_scores(model, tokenizer, test, args.batch_size)}
    rows["untuned 10-shot ICL"] = {"scores": item_scores(model, tokenizer, test, args.batch_size,
                                                         lambda i: demonstrations(task.train, 10, seed, i))}
    log(f"  baselines {mean(rows['untuned 0-shot']['scores'][1]):.2f} / {mean(rows['untuned 10-shot ICL']['scores'][1]):.2f} EM")

    def peft_method(config):
        def run(lr):
            set_seed(seed)
            peft_model = get_peft_model(base(), config)
            train(peft_model, fit_rows, lr, epochs=args.epochs, seed=seed, eval_dataset=valid_rows, **on_device)
            return peft_model
        return run

    selection = {}

    def lofit(k, l1=args.l1, min_steps=args.min_steps, bare=False, **offset_args):
        phase1 = (l1, min_steps, bare)
        train_rows, valid = (bare_rows, bare_valid) if bare else (fit_rows, valid_rows)

        def run(lr):
            model = base()
            if phase1 not in selection:  # phase 1 once per task, seed and setting: every k and lr reads the same scores
                start = time.perf_counter()
                result = select_heads(model, train_rows, k=k, l1=l1, lr=args.select_lr, seed=seed, min_steps=min_steps,
                                      **on_device)
                selection[phase1] = (result, time.perf_counter() - start)
            heads = top_k_heads(selection[phase1][0].scores, k)
            run.phase1_seconds = selection[phase1][1]
            return train_offsets(model, heads, train_rows, lr=lr, epochs=args.epochs, seed=seed, eval_dataset=valid,
                                 **offset_args, **on_device)
        run.valid = valid
        return run

    def random_heads(k):
        def run(lr):
            model = base()
            site = headwise.find_head_sites(model)
            count = head_count(k, len(site), site[0].num_heads)
            heads = random.Random(seed).sample([(l, h) for l in range(len(site)) for h in range(site[0].num_heads)], count)
            return train_offsets(model, heads, fit_rows, lr=lr, epochs=args.epochs, seed=seed, eval_dataset=valid_rows,
                                 **on_device)
        return run

    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    methods = [
        (LORA, peft_method(lora), args.lora_lr),
        ("PEFT IA3", peft_method(IA3Config(task_type="CAUSAL_LM")), args.ia3_lr),
        ("LoFiT 3% heads", lofit(0.03), args.lofit_lr),
        ("LoFiT 10% heads", lofit(0.10), args.lofit_lr),
        *([("LoFiT 10% heads, scale + offset", lofit(0.10, use_scale=True), args.lofit_lr),
           ("LoFiT 10% heads, raw offsets (paper)", lofit(0.10, relative=False), args.raw_lr),
           ("LoFiT 10% heads, phase 1 l1 1e-2", lofit(0.10, l1=1e-2), args.lofit_lr),
           ("LoFiT 10% heads, phase 1 >= 120 steps", lofit(0.10, min_steps=120), args.lofit_lr),
           ("LoFiT 20% heads", lofit(0.20), args.lofit_lr),
           ("LoFiT 10% heads, answer tokens only", lofit(0.10, bare=True), args.lofit_lr)] if args.study else []),
        ("LoFiT 10% random heads", random_heads(0.10), args.lofit_lr),
    ]
    methods = [m for m in methods if not args.rows or any(re.search(pattern, m[0]) for pattern in args.rows)]
    for label, run, default_lr in methods:
        best = None
        for factor in args.sweep:
            lr = default_lr * factor
            start = time.perf_counter()
            model = run(lr)
            seconds = time.perf_counter() - start + getattr(run, "phase1_seconds", 0)  # phase 1 is charged to every LoFiT row
            loss = validation_loss(model, getattr(run, "valid", valid_rows), args.batch_size)
            if best is None or loss < best["valid loss"]:
                best = {"lr": lr, "valid loss": loss, "seconds": seconds, "params": headwise.trainable_parameters(model)["trainable"],
                        "scores": item_scores(model, tokenizer, test, args.batch_size)}
            del model
        rows[label] = best
        log(f"  {label}: lr {best['lr']:g} (valid loss {best['valid loss']:.3f}) acc {mean(best['scores'][0]):.2f}/"
            f"{mean(best['scores'][1]):.2f} params {best['params']} {best['seconds']:.0f}s")
    if (args.l1, args.min_steps, False) in selection and seed == args.seeds[0]:
        selection[(args.l1, args.min_steps, False)][0].plot(Path(args.out) / f"lofit_heads_{name}.png", title=f"LoFiT ||A||: {name}")
    return rows


def arguments(argv=None):
    """The command line (``argv``, default sys.argv), ``--quick`` applied."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["country-capital", "antonym", "english-french", "present-past"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-valid", type=int, default=40, help="validation items (epochs and learning rates are chosen on them)")
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--sweep", nargs="+", type=float, default=[1 / 3, 1.0, 3.0],
                        help="learning rates tried, as multiples of each method's default")
    parser.add_argument("--l1", type=float, default=1e-3)
    parser.add_argument("--select-lr", type=float, default=5e-3)
    parser.add_argument("--lofit-lr", type=float, default=0.2, help="LoFiT phase-2 default lr (offsets in head-RMS units)")
    parser.add_argument("--raw-lr", type=float, default=1e-2, help="default lr of the raw-offset LoFiT row (the old default)")
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--ia3-lr", type=float, default=3e-3)
    parser.add_argument("--study", action="store_true",
                        help="add LoFiT rows: scale + offset, raw offsets, phase-1 l1 1e-2, phase 1 >= 120 steps, 20%% of heads")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="run only the trained rows whose label one of these regular expressions finds (baselines always "
                             "run); end with $ for a whole label: 'LoFiT 10%% heads$' leaves out the study's variants")
    parser.add_argument("--min-steps", type=int, default=40, help="phase-1 (head selection) steps at least")
    add_run_arguments(parser, QUICK, resume=True)
    return apply_quick(parser.parse_args(argv), QUICK, argv)


def main():
    args = arguments()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    log = lambda text: print(text, flush=True)  # noqa: E731
    began = time.perf_counter()
    _, tokenizer = load_model(args)
    base = lambda: load_model(args)[0]  # noqa: E731  a fresh copy for every trained row

    cache = ResultCache(args.resume, args)
    runs = {seed: {task: cache.run(task, seed, lambda: run_task(task, args, base, tokenizer, log, seed))
                   for task in args.tasks} for seed in args.seeds}
    labels = [label for label in runs[args.seeds[0]][args.tasks[0]] if label != "splits"]
    score = lambda seed, task, label, i: mean(runs[seed][task][label]["scores"][i])  # noqa: E731
    header = ["method", "trainable params"] + [f"{t} (first / EM)" for t in args.tasks] + [
        "mean first-token", "mean EM", "mean valid loss (chooses)", "chosen lr per seed and task", "train time / LoRA"]
    table = []
    for label in labels:
        cells = [f"{mean_spread([score(s, t, label, 0) for s in args.seeds])} / "
                 f"{mean([score(s, t, label, 1) for s in args.seeds]):.2f}" for t in args.tasks]
        task_mean = lambda seed, i: mean([score(seed, t, label, i) for t in args.tasks])  # noqa: E731
        first = runs[args.seeds[0]][args.tasks[0]][label]
        trained = "lr" in first
        lrs = " ".join(sorted({f"{runs[s][t][label]['lr']:.2g}" for s in args.seeds for t in args.tasks})) if trained else ""
        ratio = (f"{mean([runs[s][t][label]['seconds'] / runs[s][t][LORA]['seconds'] for s in args.seeds for t in args.tasks]):.2f}"
                 if trained and LORA in labels else "")
        table.append([label, f"{first['params']:,}" if trained else "0", *cells,
                      mean_spread([task_mean(s, 0) for s in args.seeds], 3), mean_spread([task_mean(s, 1) for s in args.seeds], 3),
                      f"{mean([runs[s][t][label]['valid loss'] for s in args.seeds for t in args.tasks]):.3f}" if trained else "",
                      lrs, ratio])
    pairs = lambda label, baseline, i: ([runs[s][t][label]["scores"][i] for s in args.seeds for t in args.tasks],  # noqa: E731
                                        [runs[s][t][baseline]["scores"][i] for s in args.seeds for t in args.tasks])
    ours = "LoFiT 10% heads" if "LoFiT 10% heads" in labels else next((l for l in labels if l.startswith("LoFiT")), None)
    comparisons, difference_rows = {}, []
    for baseline in [b for b in (LORA, "PEFT IA3", "untuned 0-shot", "untuned 10-shot ICL") if b in labels and ours]:
        for metric, i in (("exact match", 1), ("first token", 0)):
            comparisons[f"{ours} / {baseline} / {metric}"] = paired_bootstrap(*pairs(ours, baseline, i))
        difference_rows.append([ours, baseline, interval(comparisons[f"{ours} / {baseline} / exact match"]),
                                interval(comparisons[f"{ours} / {baseline} / first token"])])
    for variant in [label for label in labels if ours and label.startswith(ours + ",")]:  # the --study rows
        for metric, i in (("exact match", 1), ("first token", 0)):
            comparisons[f"{variant} / {ours} / {metric}"] = paired_bootstrap(*pairs(variant, ours, i))
        difference_rows.append([variant, ours, interval(comparisons[f"{variant} / {ours} / exact match"]),
                                interval(comparisons[f"{variant} / {ours} / first token"])])
    scope = f"{len(args.tasks)} tasks x {len(args.seeds)} seeds x {args.n_test} items"
    headline = [headline_row("LoFiT vs PEFT", ours, baseline, "exact match", comparisons[f"{ours} / {baseline} / exact match"], scope)
                for baseline in (LORA, "untuned 0-shot") if ours and f"{ours} / {baseline} / exact match" in comparisons]
    minutes = (time.perf_counter() - began) / 60
    text = (markdown_table(header, table) + "\n\nPaired differences (same test items), mean over tasks and seeds, 95% "
            "bootstrap interval:\n\n" + markdown_table(["method", "baseline", "exact match", "first token"], difference_rows))
    settings = (f"{model_note(args)}; {cache.time_note(minutes)}. Per task and seed: {args.n_train} training, {args.n_valid} validation "
                f"and {args.n_test} test items (benchmarks/splits.py; manifests in the JSON); {args.epochs:g} epochs (batch 8) "
                f"for every trained method, its best epoch by validation loss kept; learning rates "
                f"{', '.join(f'{f:.3g}' for f in args.sweep)} x each method's default (LoRA {args.lora_lr:g}, IA3 {args.ia3_lr:g}, "
                f"LoFiT {args.lofit_lr:g}), the one with the lowest validation loss kept. Zero-shot `Q: x\\nA:` prompts; 10-shot "
                f"ICL draws its demonstrations per query. {seed_note(args.seeds)} Per task: first-token mean [min–max] / "
                f"exact-match mean.")
    title = "LoFiT vs PEFT, equal tuning" + (", and the LoFiT recipe study" if args.study else "")
    publish(title, settings, text, args, headline=headline, header=header, rows=table,
            comparisons=comparisons, runs=runs)


if __name__ == "__main__":
    main()
