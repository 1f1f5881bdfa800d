"""Soft injection vs 0-shot and 10-shot ICL over the 16 Function Vectors tasks, every choice on validation.

    python benchmarks/soft_injection_vs_icl.py [--tasks ...] [--seeds 0 1 2] [--steps 150] [--lrs 0.067 0.2 0.6]
                                               [--n-valid 50] [--n-test 60] [--losses answer first_token]
                                               [--model ...] [--device ...] [--json out.json] [--append]

Per task and seed (benchmarks/splits.py): a seeded train / validation / test split, recorded in the JSON. The
task embedding comes from ten-shot prompts of the training split; theta is fitted on zero-shot training prompts
(Adam, batch 8) with each loss (``answer``: the whole answer and its newline, the library default;
``first_token``: the paper's) at every learning rate of ``--lrs``, validated every ``--eval-every`` steps; the
learning rate and step with the lowest validation loss are kept (test items are never looked at to choose).
10-shot ICL draws its demonstrations afresh for every query from the training split. Accuracy on test items by
first token and greedy exact match; differences to ICL and 0-shot are paired (same items) with a 95% bootstrap
interval over tasks and seeds. Cost: the one-off extraction + fit time, and per-query latency (one forward pass,
interleaved, median) as ratios to 10-shot ICL, in the same run.

``--also lora lofit``: PEFT LoRA r=8 and LoFiT (10% of heads) trained on the same training items, with the same
budget (``--steps`` Adam steps at batch 8, validated every ``--eval-every`` steps, the best check kept), the same
x1/3, x1, x3 learning-rate sweep around each method's default and the lr chosen by validation loss; their test
items are the same, so soft injection is compared with each of them by paired differences too.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (add_run_arguments, apply_quick, headline_row, interval, load_model, markdown_table,  # noqa: E402
                    mean_spread, model_note, paired_bootstrap, publish, ResultCache, seed_note)
from headwise.experiments.data import few_shot_prompt, left_padded_batch  # noqa: E402
from headwise.experiments.evaluate import first_token_hits, greedy_answers, is_exact_match  # noqa: E402
from headwise.experiments.plots import plot_head_scores  # noqa: E402
from soft_injection import SoftInjectionConfig, alpha_matrix, extract_task_embedding, fit  # noqa: E402
from splits import demonstrations, manifest, word_pair_splits  # noqa: E402

SWEEP = (1 / 3, 1.0, 3.0)
SAME_EXAMPLES = {"lora": ("PEFT LoRA r=8", 1e-3), "lofit": ("LoFiT 10% heads", 0.2)}  # label, default lr (lofit_vs_peft's)

QUICK = {"tasks": ["antonym"], "losses": ["answer"], "steps": 30, "eval_every": 15, "n_prompts": 12, "n_valid": 12,
         "n_test": 20, "lrs": [0.2], "latency": False}
TASKS = [
    # abstractive
    "antonym", "country-capital", "english-french", "present-past", "capitalize", "next_item", "prev_item",
    "english-spanish", "country-currency", "lowercase_first_letter", "sentiment",
    # extractive
    "choose_first_of_3", "choose_last_of_3", "alphabetically_first_3", "animal_v_object_3", "fruit_v_animal_3",
]


def item_scores(model, tokenizer, test, shots_for, batch_size: int) -> tuple[list[float], list[float]]:
    """Per test item: (first-token hit, greedy exact match) with the prompt ``shots_for(i)`` demonstrations give."""
    prompts = [few_shot_prompt(p["input"], shots_for(i)) for i, p in enumerate(test)]
    answers = [p["output"] for p in test]
    first = first_token_hits(model, tokenizer, prompts, answers, batch_size=batch_size)
    texts = greedy_answers(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=6)
    return [float(h) for h in first], [float(is_exact_match(t, a)) for t, a in zip(texts, answers)]


def mean(values) -> float:
    return sum(values) / len(values)


@torch.no_grad()
def interleaved_latency(model, tokenizer, zero_shot: list[str], ten_shot: list[str], repeats=5):
    """Median seconds of one single-query forward pass: soft injection (0-shot prompt) and 10-shot ICL (no adapter)."""
    device = next(model.parameters()).device
    ours, icl = [], []
    for _ in range(repeats):
        for q0, q10 in zip(zero_shot, ten_shot):
            start = time.perf_counter()
            model(**left_padded_batch(tokenizer, [q0], device), logits_to_keep=1)
            ours.append(time.perf_counter() - start)
            with model.disable_adapter():
                start = time.perf_counter()
                model(**left_padded_batch(tokenizer, [q10], device), logits_to_keep=1)
                icl.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(icl)


def task_splits(name: str, seed: int, args):
    """One task's train / validation / test items at ``seed`` (what tests/test_benchmark_splits.py checks)."""
    return word_pair_splits(name, seed, None, args.n_valid, args.n_test)


def same_examples(method: str, fresh, tokenizer, task, args, seed) -> dict:
    """PEFT LoRA or LoFiT trained on the task's training items with soft injection's budget and sweep: per lr
    ``--steps`` steps at batch 8, the best validation check kept; the lr with the lowest validation loss wins."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    from headwise.experiments.data import training_set
    from headwise.experiments.training import train
    from headwise.heads import top_k_heads
    from lofit import select_heads, train_offsets
    from lofit_vs_peft import validation_loss

    rows, valid_rows = training_set(tokenizer, task.train), training_set(tokenizer, task.valid)
    schedule = {"max_steps": args.steps, "eval_strategy": "steps", "eval_steps": args.eval_every, "batch_size": 8,
                "use_cpu": args.device == "cpu"}
    label, default_lr = SAME_EXAMPLES[method]
    heads, best = None, None
    for lr in (default_lr * factor for factor in SWEEP):
        set_seed(seed)
        model = fresh()
        if method == "lora":
            config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
            model = get_peft_model(model, config)
            train(model, rows, lr, seed=seed, eval_dataset=valid_rows, **schedule)
        else:
            if heads is None:  # phase 1 once per task and seed, on the same training items
                heads = top_k_heads(select_heads(model, rows, k=0.10, seed=seed, use_cpu=args.device == "cpu").scores, 0.10)
            model = train_offsets(model, heads, rows, lr=lr, seed=seed, eval_dataset=valid_rows, **schedule)
        loss = validation_loss(model, valid_rows, args.batch_size)
        if best is None or loss < best["valid loss"]:
            best = {"valid loss": loss, "lr": lr, "scores": item_scores(model, tokenizer, task.test, lambda i: [], args.batch_size)}
        del model
    return best


def run_task(name, args, model, tokenizer, log, seed, fresh=None):
    task = task_splits(name, seed, args)
    train = task.train
    shots = lambda i: demonstrations(train, 10, seed, i)  # noqa: E731  drawn afresh per query
    result = {"splits": manifest(name, seed, train=train, valid=task.valid, test=task.test),
              "zero": item_scores(model, tokenizer, task.test, lambda i: [], args.batch_size),
              "icl": item_scores(model, tokenizer, task.test, shots, args.batch_size)}
    config = SoftInjectionConfig(n_prompts=args.n_prompts, n_shots=10)
    start = time.perf_counter()
    embedding = extract_task_embedding(model, tokenizer, train, config.n_prompts, config.n_shots, config.template, seed=seed)
    extraction = time.perf_counter() - start
    for loss in args.losses:
        start, best = time.perf_counter(), None
        for lr in args.lrs:  # the learning rate is chosen by validation loss, like the step
            injected, history = fit(
                model, tokenizer, train, task.valid, embedding=embedding, config=config, steps=args.steps, lr=lr,
                batch_size=8, eval_every=args.eval_every, n_valid=len(task.valid), seed=seed, loss=loss,
            )
            if best is None or history.best_loss < best["valid loss"]:
                best = {"valid loss": history.best_loss, "lr": lr, "step": history.best_step,
                        "scores": item_scores(injected, tokenizer, task.test, lambda i: [], args.batch_size)}
                if seed == args.seeds[0]:
                    alpha = alpha_matrix(injected)
            injected.unload()
        one_off = extraction + time.perf_counter() - start
        result[loss], result[f"{loss} choice"] = best["scores"], {k: best[k] for k in ("valid loss", "lr", "step")}
        if args.latency:
            injected, _ = fit(model, tokenizer, train, task.valid, embedding=embedding, config=config, steps=0,
                              n_valid=len(task.valid), seed=seed, loss=loss)
            sample = task.test[:8]
            latency = interleaved_latency(
                injected, tokenizer, [few_shot_prompt(p["input"]) for p in sample],
                [few_shot_prompt(p["input"], shots(i)) for i, p in enumerate(sample)],
            )
            injected.unload()
            result[f"{loss} cost"] = (one_off / latency[1], latency[0] / latency[1])
        if seed == args.seeds[0]:
            plot_head_scores(alpha, Path(args.out) / f"soft_injection_alpha_{name}_{loss}.png",
                             title=f"alpha: {name} ({loss} loss)", label="alpha")
    for method in args.also:
        chosen = same_examples(method, fresh, tokenizer, task, args, seed)
        result[method], result[f"{method} choice"] = chosen["scores"], {k: chosen[k] for k in ("valid loss", "lr")}
    log(f"{name} seed {seed}: " + " ".join(f"{k} {mean(result[k][0]):.2f}/{mean(result[k][1]):.2f}"
                                            for k in ("zero", "icl", *args.losses, *args.also))
        + " chosen " + " ".join(f"{loss} lr {result[f'{loss} choice']['lr']:g} step {result[f'{loss} choice']['step']}" for loss in args.losses))
    return result


def comparisons(runs, args) -> dict:
    """Paired differences over tasks and seeds: each loss against 10-shot ICL, 0-shot and every ``--also`` method
    trained on the same examples, both metrics."""
    found = {}
    for loss in args.losses:
        for baseline in ("icl", "zero", *args.also):
            for metric, index in (("exact match", 1), ("first token", 0)):
                pairs = [(runs[s][t][loss][index], runs[s][t][baseline][index]) for s in args.seeds for t in args.tasks]
                found[(loss, baseline, metric)] = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs])
    return found


def arguments(argv=None):
    """The command line (``argv``, default sys.argv), ``--quick`` applied."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=["answer", "first_token"], choices=["answer", "first_token"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.067, 0.2, 0.6],
                        help="learning rates tried, the one with the lowest validation loss kept (the same x1/3, x1, x3 "
                             "sweep around each method's default as in lofit_vs_peft.py)")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--n-prompts", type=int, default=50)
    parser.add_argument("--n-valid", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--also", nargs="*", default=[], choices=sorted(SAME_EXAMPLES),
                        help="also train PEFT LoRA r=8 and/or LoFiT (10%% of heads) on the same training items, with the same "
                             "steps, the same x1/3, x1, x3 lr sweep around their defaults and the lr chosen on validation")
    parser.add_argument("--no-latency", dest="latency", action="store_false", help="skip the per-query latency ratios")
    add_run_arguments(parser, QUICK, resume=True)
    return apply_quick(parser.parse_args(argv), QUICK, argv)


def main():
    args = arguments()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    model, tokenizer = load_model(args)
    log = lambda text: print(text, flush=True)  # noqa: E731
    began = time.perf_counter()
    fresh = lambda: load_model(args)[0]  # noqa: E731  a model of its own for every LoRA / LoFiT row
    cache = ResultCache(args.resume, args)
    runs = {seed: {name: cache.run(name, seed, lambda: run_task(name, args, model, tokenizer, log, seed, fresh))
                   for name in args.tasks} for seed in args.seeds}

    columns = ([("zero", "0-shot"), ("icl", "10-shot ICL")] + [(loss, f"soft injection, {loss} loss") for loss in args.losses]
               + [(method, f"{SAME_EXAMPLES[method][0]}, same examples") for method in args.also])
    rows = []
    for name in args.tasks:
        cells = []
        for key, _ in columns:
            first = [mean(runs[s][name][key][0]) for s in args.seeds]
            exact = [mean(runs[s][name][key][1]) for s in args.seeds]
            cells.append(f"{mean_spread(first)} / {mean_spread(exact)}")
        chosen = " / ".join(",".join(f"{runs[s][name][f'{loss} choice']['lr']:g}@{runs[s][name][f'{loss} choice']['step']}"
                                     for s in args.seeds) for loss in args.losses)
        chosen += "".join(f"; {method} " + ",".join(f"{runs[s][name][f'{method} choice']['lr']:.2g}" for s in args.seeds)
                          for method in args.also)
        if args.latency:
            cost = [runs[s][name][f"{args.losses[0]} cost"] for s in args.seeds]
            rows.append([name, *cells, chosen, f"{mean([c[0] for c in cost]):.0f}", f"{mean([c[1] for c in cost]):.2f}"])
        else:
            rows.append([name, *cells, chosen])
    task_mean = lambda seed, key, i: mean([mean(runs[seed][n][key][i]) for n in args.tasks])  # noqa: E731
    rows.append(["**mean**", *(
        f"**{mean_spread([task_mean(s, key, 0) for s in args.seeds], 3)} / {mean_spread([task_mean(s, key, 1) for s in args.seeds], 3)}**"
        for key, _ in columns), "", *(["", ""] if args.latency else [])])
    header = ["task", *(f"{title} (first / EM)" for _, title in columns),
              f"chosen lr@step per seed ({' / '.join(args.losses)}{''.join(f'; {m} lr' for m in args.also)})"]
    if args.latency:
        header += [f"one-off cost / one 10-shot query ({args.losses[0]})", "query latency / 10-shot"]
    found = comparisons(runs, args)
    scope = f"{len(args.tasks)} tasks x {len(args.seeds)} seeds x {args.n_test} items"
    differences = markdown_table(
        ["soft injection loss", "baseline", "exact match: difference [95% CI]", "first token: difference [95% CI]"],
        [[loss, dict(icl="10-shot ICL", zero="0-shot", **{m: f"{SAME_EXAMPLES[m][0]}, same examples" for m in args.also})[b],
          interval(found[(loss, b, "exact match")]), interval(found[(loss, b, "first token")])]
         for loss in args.losses for b in ("icl", "zero", *args.also)])
    title = "Soft injection vs ICL" + (f" and {' and '.join(SAME_EXAMPLES[m][0] for m in args.also)} on the same examples"
                                       if args.also else "")
    ours = f"soft injection ({args.losses[0]} loss), 0-shot prompt"
    if args.also:  # the run's question: against the trained methods (ICL is the 16-task run's headline)
        headline = [headline_row(title, ours, f"{SAME_EXAMPLES[m][0]}, same examples", "exact match",
                                 found[(args.losses[0], m, "exact match")], scope) for m in args.also]
    else:
        headline = [headline_row(title, ours, "10-shot ICL", metric, found[(args.losses[0], "icl", metric)], scope)
                    for metric in ("exact match", "first token")]
    minutes = (time.perf_counter() - began) / 60
    settings = (f"{model_note(args)}; {cache.time_note(minutes)}. {len(args.tasks)} Function Vectors tasks; {args.n_test} test and "
                f"{args.n_valid} validation items per task and seed, the rest for training (benchmarks/splits.py; the "
                f"manifests are in the JSON). Task embedding from {args.n_prompts} ten-shot prompts of the training split; "
                f"theta: {args.steps} Adam steps (batch 8) at each lr of {', '.join(f'{lr:g}' for lr in args.lrs)}, validation "
                f"every {args.eval_every} steps, the lr and step with the lowest validation loss kept. 10-shot ICL: "
                f"demonstrations drawn per query from the training split. "
                + (f"{', '.join(SAME_EXAMPLES[m][0] for m in args.also)}: the same training items and steps, lr from "
                   f"x1/3, x1, x3 of {', '.join(f'{SAME_EXAMPLES[m][1]:g}' for m in args.also)} chosen by validation loss"
                   f"{' (LoFiT: heads from phase 1 on the same items)' if 'lofit' in args.also else ''}. " if args.also else "")
                + f"{seed_note(args.seeds)} Per task: first-token "
                f"mean [min–max] / exact-match mean [min–max].")
    text = markdown_table(header, rows) + "\n\nPaired differences (same test items), mean over tasks and seeds, 95% bootstrap interval:\n\n" + differences
    publish(title, settings, text, args, headline=headline, header=header, rows=rows,
            comparisons={" / ".join(k): v for k, v in found.items()}, runs=runs)


if __name__ == "__main__":
    main()
