"""Soft injection vs 0-shot and 10-shot ICL on SmolLM2-135M-Instruct over Function Vectors tasks.

    python benchmarks/soft_injection_vs_icl.py [--tasks ...] [--seeds 0 1 2] [--steps 150] [--n-test 60]
                                               [--losses answer first_token] [--append]

Per task and seed: a seeded split; the task embedding from 50 ten-shot prompts of the training split;
theta fitted on zero-shot training prompts (Adam lr 0.2) with each loss (``answer``: the whole answer
and its newline, the library default; ``first_token``: the paper's), from the same embedding,
validated every 50 steps on held-out items with the best theta kept; accuracy on test items by first
token and greedy exact match. Tables give mean [min–max] over seeds. Cost: the one-off extraction +
fit time, and per-query latency (one forward pass, interleaved, median) as ratios to 10-shot ICL,
measured in the same run.
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
import headwise  # noqa: E402
from common import PLOTS, apply_quick, markdown_table, mean_spread, publish, quick_help, seed_note  # noqa: E402
from headwise.experiments.data import few_shot_prompt, left_padded_batch, load_word_pairs  # noqa: E402
from headwise.experiments.evaluate import first_token_accuracy, greedy_exact_match  # noqa: E402
from headwise.experiments.plots import plot_head_scores  # noqa: E402
from soft_injection import SoftInjectionConfig, alpha_matrix, extract_task_embedding, fit  # noqa: E402

QUICK = {"tasks": ["antonym"], "losses": ["answer"], "steps": 30, "eval_every": 15, "n_prompts": 12, "n_valid": 12,
         "n_test": 20, "latency": False}
TASKS = [
    # abstractive
    "antonym", "country-capital", "english-french", "present-past", "capitalize", "next_item", "prev_item",
    "english-spanish", "country-currency", "lowercase_first_letter", "sentiment",
    # extractive
    "choose_first_of_3", "choose_last_of_3", "alphabetically_first_3", "animal_v_object_3", "fruit_v_animal_3",
]


def accuracy(model, tokenizer, test, shots_for):
    prompts = [few_shot_prompt(p["input"], shots_for(i)) for i, p in enumerate(test)]
    answers = [p["output"] for p in test]
    return (
        first_token_accuracy(model, tokenizer, prompts, answers, batch_size=8),
        greedy_exact_match(model, tokenizer, prompts, answers, batch_size=8, max_new_tokens=6),
    )


@torch.no_grad()
def interleaved_latency(model, tokenizer, zero_shot: list[str], ten_shot: list[str], repeats=5):
    """Median seconds of one single-query forward pass: soft injection (0-shot prompt) and 10-shot ICL (no adapter)."""
    ours, icl = [], []
    for _ in range(repeats):
        for q0, q10 in zip(zero_shot, ten_shot):
            start = time.perf_counter()
            model(**left_padded_batch(tokenizer, [q0]), logits_to_keep=1)
            ours.append(time.perf_counter() - start)
            with model.disable_adapter():
                start = time.perf_counter()
                model(**left_padded_batch(tokenizer, [q10]), logits_to_keep=1)
                icl.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(icl)


def run_task(name, args, model, tokenizer, log, seed):
    task = load_word_pairs(name, valid=args.n_valid, test=args.n_test, seed=seed)
    train = task.train
    shots = lambda i: [train[(i * 10 + j) % len(train)] for j in range(10)]  # noqa: E731  fixed demos per item
    result = dict(zero=accuracy(model, tokenizer, task.test, lambda i: []), icl=accuracy(model, tokenizer, task.test, shots))
    config = SoftInjectionConfig(n_prompts=args.n_prompts, n_shots=10)
    start = time.perf_counter()
    embedding = extract_task_embedding(model, tokenizer, train, config.n_prompts, config.n_shots, config.template, seed=seed)
    extraction = time.perf_counter() - start
    for loss in args.losses:
        start = time.perf_counter()
        injected, history = fit(
            model, tokenizer, train, task.valid, embedding=embedding, config=config, steps=args.steps, lr=0.2,
            batch_size=8, eval_every=args.eval_every, seed=seed, loss=loss,
        )
        one_off = extraction + time.perf_counter() - start
        result[loss] = accuracy(injected, tokenizer, task.test, lambda i: [])
        result[f"{loss} best"] = history.best_step
        if args.latency:
            sample = task.test[:8]
            latency = interleaved_latency(
                injected, tokenizer, [few_shot_prompt(p["input"]) for p in sample],
                [few_shot_prompt(p["input"], shots(i)) for i, p in enumerate(sample)],
            )
            result[f"{loss} cost"] = (one_off / latency[1], latency[0] / latency[1])
        if seed == args.seeds[0]:
            plot_head_scores(alpha_matrix(injected), Path(args.out) / f"soft_injection_alpha_{name}_{loss}.png",
                             title=f"alpha: {name} ({loss} loss)", label="alpha")
        injected.unload()
    log(f"{name} seed {seed}: " + " ".join(f"{k} {result[k][0]:.2f}/{result[k][1]:.2f}" for k in ("zero", "icl", *args.losses))
        + " best steps " + " ".join(f"{loss} {result[f'{loss} best']}" for loss in args.losses))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=["answer", "first_token"], choices=["answer", "first_token"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--n-prompts", type=int, default=50)
    parser.add_argument("--n-valid", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--no-latency", dest="latency", action="store_false", help="skip the per-query latency ratios")
    parser.add_argument("--out", default=str(PLOTS), help="where the plots go")
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--quick", action="store_true", help=quick_help(QUICK))
    parser.add_argument("--json", type=Path, help="also write the table and the per-seed figures here")
    args = apply_quick(parser.parse_args(), QUICK)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    model, tokenizer = headwise.load_bundled_model()
    log = lambda text: print(text, flush=True)  # noqa: E731
    runs = {seed: {name: run_task(name, args, model, tokenizer, log, seed) for name in args.tasks} for seed in args.seeds}

    columns = [("zero", "0-shot"), ("icl", "10-shot ICL")] + [(loss, f"soft injection, {loss} loss") for loss in args.losses]
    rows = []
    for name in args.tasks:
        cells = []
        for key, _ in columns:
            first = [runs[s][name][key][0] for s in args.seeds]
            exact = [runs[s][name][key][1] for s in args.seeds]
            cells.append(f"{mean_spread(first)} / {mean_spread(exact)}")
        best = " / ".join(",".join(str(runs[s][name][f"{loss} best"]) for s in args.seeds) for loss in args.losses)
        if args.latency:
            cost = [runs[s][name][f"{args.losses[0]} cost"] for s in args.seeds]
            rows.append([name, *cells, best, f"{sum(c[0] for c in cost) / len(cost):.0f}", f"{sum(c[1] for c in cost) / len(cost):.2f}"])
        else:
            rows.append([name, *cells, best])
    task_mean = lambda seed, key, i: sum(runs[seed][n][key][i] for n in args.tasks) / len(args.tasks)  # noqa: E731
    rows.append(["**mean**", *(
        f"**{mean_spread([task_mean(s, key, 0) for s in args.seeds], 3)} / {mean_spread([task_mean(s, key, 1) for s in args.seeds], 3)}**"
        for key, _ in columns), "", *(["", ""] if args.latency else [])])
    header = ["task", *(f"{title} (first / EM)" for _, title in columns), f"best step per seed ({' / '.join(args.losses)})"]
    if args.latency:
        header += [f"one-off cost / one 10-shot query ({args.losses[0]})", "query latency / 10-shot"]
    text = markdown_table(header, rows)
    settings = (f"{len(args.tasks)} Function Vectors tasks; {args.n_test} test items each; theta: {args.steps} Adam steps "
                f"(lr 0.2, batch 8), validation on {args.n_valid} items every {args.eval_every} steps, best kept; "
                f"task embedding from {args.n_prompts} ten-shot prompts, shared by both losses. {seed_note(args.seeds)}")
    publish("Soft injection vs ICL on SmolLM2-135M-Instruct", settings, text, args, header=header, rows=rows, runs=runs)


if __name__ == "__main__":
    main()
