"""Soft injection vs 0-shot and 10-shot ICL on SmolLM2-135M-Instruct over Function Vectors tasks.

    python benchmarks/soft_injection_vs_icl.py [--tasks ...] [--steps 150] [--n-test 60] [--append]

Per task: a seeded split; the task embedding from 50 ten-shot prompts of the training split; theta
fitted on zero-shot training prompts (Adam lr 0.2), validated every 50 steps on held-out items with the
best theta kept; accuracy on test items by first token and greedy exact match. Cost: the one-off
extraction + fit time, and per-query latency (one forward pass, interleaved, median) as ratios to
10-shot ICL, measured in the same run.
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
from common import machine, markdown_table  # noqa: E402
from headwise.data import few_shot_prompt, left_padded_batch, load_word_pairs  # noqa: E402
from headwise.evaluate import first_token_accuracy, greedy_exact_match  # noqa: E402
from headwise.plots import plot_head_scores  # noqa: E402
from soft_injection import SoftInjectionConfig, alpha_matrix, fit  # noqa: E402

RESULTS = Path(__file__).parent / "RESULTS.md"
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


def run_task(name, args, model, tokenizer, log):
    task = load_word_pairs(name, valid=args.n_valid, test=args.n_test, seed=args.seed)
    train = task.train
    shots = lambda i: [train[(i * 10 + j) % len(train)] for j in range(10)]  # noqa: E731  fixed demos per item
    zero = accuracy(model, tokenizer, task.test, lambda i: [])
    icl = accuracy(model, tokenizer, task.test, shots)
    start = time.perf_counter()
    config = SoftInjectionConfig(n_prompts=args.n_prompts, n_shots=10)
    injected, history = fit(
        model, tokenizer, train, task.valid, config=config, steps=args.steps, lr=0.2, batch_size=8,
        eval_every=args.eval_every, seed=args.seed,
    )
    one_off = time.perf_counter() - start
    ours = accuracy(injected, tokenizer, task.test, lambda i: [])
    sample = task.test[:8]
    latency = interleaved_latency(
        injected, tokenizer, [few_shot_prompt(p["input"]) for p in sample],
        [few_shot_prompt(p["input"], shots(i)) for i, p in enumerate(sample)],
    )
    plot_head_scores(alpha_matrix(injected), Path(args.out) / f"soft_injection_alpha_{name}.png", title=f"alpha: {name}", label="alpha")
    injected.unload()
    log(f"{name}: 0-shot {zero[0]:.2f}/{zero[1]:.2f} 10-shot {icl[0]:.2f}/{icl[1]:.2f} SI {ours[0]:.2f}/{ours[1]:.2f} "
        f"(best step {history.best_step}, one-off {one_off:.0f}s, latency {latency[0] * 1e3:.0f} vs {latency[1] * 1e3:.0f} ms)")
    return dict(zero=zero, icl=icl, ours=ours, one_off=one_off, latency=latency, icl_query=latency[1], best=history.best_step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--n-prompts", type=int, default=50)
    parser.add_argument("--n-valid", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/plots")
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.manual_seed(args.seed)
    model, tokenizer = headwise.load_bundled_model()
    log = lambda text: print(text, flush=True)  # noqa: E731
    results = {name: run_task(name, args, model, tokenizer, log) for name in args.tasks}

    rows = []
    for name, r in results.items():
        rows.append([name, *(f"{r[k][0]:.2f} / {r[k][1]:.2f}" for k in ("zero", "icl", "ours")), r["best"],
                     f"{r['one_off'] / r['icl_query']:.0f}", f"{r['latency'][0] / r['latency'][1]:.2f}"])
    mean = lambda key, i: sum(r[key][i] for r in results.values()) / len(results)  # noqa: E731
    rows.append(["**mean**", *(f"**{mean(k, 0):.3f} / {mean(k, 1):.3f}**" for k in ("zero", "icl", "ours")), "", "", ""])
    header = ["task", "0-shot (first / EM)", "10-shot ICL", "soft injection (0-shot prompt)", "best step",
              "one-off cost / one 10-shot query", "query latency / 10-shot"]
    text = markdown_table(header, rows)
    print("\n" + text)
    if args.append:
        with RESULTS.open("a") as handle:
            handle.write(
                f"\n## Soft injection vs ICL on SmolLM2-135M-Instruct ({time.strftime('%Y-%m-%d')})\n\n"
                f"Command: `python {' '.join(sys.argv)}`  \nMachine: {machine()}  \n"
                f"{len(results)} Function Vectors tasks; {args.n_test} test items each; theta: {args.steps} Adam steps "
                f"(lr 0.2, batch 8), validation on {args.n_valid} items every {args.eval_every} steps, best kept; "
                f"task embedding from {args.n_prompts} ten-shot prompts.\n\n{text}\n"
            )


if __name__ == "__main__":
    main()
