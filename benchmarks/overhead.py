"""Inference cost of headwise adapters against the bare model, measured side by side in one run.

    .venv/bin/python benchmarks/overhead.py [--quick] [--repeats 15] [--json out.json]

SmolLM2-135M-Instruct, prefill of batch 8 x 128 tokens and one decoding step (batch 8, 128 cached tokens),
for the bare model, LoFiT on 10% of heads and on all heads, soft injection and ZeroTuning on all heads,
and merged LoFiT (10%), under sdpa and eager. Every round times each variant once in a shuffled order
(after a warm-up); a variant's figure is the median of its per-round ratio to the bare model of the same
round, with a 95% bootstrap interval over the rounds.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch

from common import machine, markdown_table, pyplot, save_figure

import headwise
from headwise.heads import top_k_heads
from headwise.progress import disable_progress_bars
from lofit import LofitConfig
from soft_injection import inject
from zerotuning import ZeroTuningConfig



def variants(base) -> dict[str, torch.nn.Module]:
    """The models to time: independent copies of ``base``, each adapted with non-identity weights."""
    sites = headwise.find_head_sites(base)
    scores = torch.rand(len(sites), sites[0].num_heads, generator=torch.Generator().manual_seed(0))
    tenth = top_k_heads(scores, 0.1)
    out = {"bare": base}
    out["LoFiT 10% heads"] = headwise.wrap(copy.deepcopy(base), LofitConfig(heads=tenth, init_weights=False))
    out["LoFiT all heads"] = headwise.wrap(copy.deepcopy(base), LofitConfig(heads="all", init_weights=False))
    out["soft injection all heads"] = inject(copy.deepcopy(base), torch.randn(len(sites), sites[0].num_heads, sites[0].head_dim))
    out["ZeroTuning all heads"] = headwise.wrap(copy.deepcopy(base), ZeroTuningConfig(heads="all", gamma=1.5))
    out["LoFiT 10% merged"] = headwise.wrap(copy.deepcopy(base), LofitConfig(heads=tenth, init_weights=False)).merge_and_unload()
    for model in out.values():
        model.eval()
    return out


def timers(batch: int, length: int, vocab: int):
    ids = torch.randint(10, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)

    def prefill(model):
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
        return time.perf_counter() - start

    caches = {}

    def decode(model):
        key = id(model)
        if key not in caches:
            caches[key] = model(input_ids=ids, attention_mask=mask, use_cache=True).cache
        cache = caches[key]
        step_mask = torch.ones(batch, length + 1, dtype=torch.long)
        start = time.perf_counter()
        model(input_ids=ids[:, -1:], attention_mask=step_mask, cache=cache, use_cache=True, logits_to_keep=1)
        elapsed = time.perf_counter() - start
        cache.crop(-1)  # drop the step just added
        return elapsed

    return {"prefill": prefill, "decode step": decode}


def bootstrap(ratios: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    medians = sorted(sorted(rng.choices(ratios, k=len(ratios)))[len(ratios) // 2] for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws)]


@torch.no_grad()
def measure(models, timer, repeats: int, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    names = list(models)
    for name in names:  # warm-up (and the decode cache)
        timer(models[name])
        timer(models[name])
    ratios = {name: [] for name in names if name != "bare"}
    for _ in range(repeats):
        order = names[:]
        rng.shuffle(order)
        times = {name: timer(models[name]) for name in order}
        for name in ratios:
            ratios[name].append(times[name] / times["bare"])
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="5 rounds, eager only: a smoke run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    disable_progress_bars()
    repeats = 5 if args.quick else args.repeats
    backends = ("sdpa",) if args.quick else ("sdpa", "eager")
    results = {}
    rows = []
    for backend in backends:
        base, _ = headwise.load_bundled_model(attn_implementation=backend)
        models = variants(base)
        for phase, timer in timers(args.batch, args.length, base.config.vocab_size).items():
            ratios = measure(models, timer, repeats, seed=len(rows))
            for name, values in ratios.items():
                median = sorted(values)[len(values) // 2]
                low, high = bootstrap(values)
                results[f"{backend} / {phase} / {name}"] = {"median": median, "ci95": [low, high], "ratios": values}
                rows.append([backend, phase, name, f"{median:.3f}", f"[{low:.3f}–{high:.3f}]"])
        del models, base
    print(f"# Inference overhead vs the bare model ({machine()})\n")
    print(f"Batch {args.batch} x {args.length} tokens; {repeats} interleaved rounds after a warm-up; median of per-round ratios, "
          "95% bootstrap interval.\n")
    print(markdown_table(["attention", "phase", "variant", "time / bare", "95% CI"], rows))
    _plot(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _plot(results) -> None:
    plt = pyplot()
    labels = list(results)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(labels) + 1.2))
    for row, label in enumerate(labels):
        low, high = results[label]["ci95"]
        ax.plot([low, high], [row, row], color="tab:blue")
        ax.scatter(results[label]["median"], row, color="tab:blue")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("time / bare model (median, 95% CI)")
    save_figure(fig, "overhead.png")


if __name__ == "__main__":
    main()
