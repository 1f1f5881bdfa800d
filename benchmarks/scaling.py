"""How the adapters' cost grows with sequence length, batch size and the number of adapted heads.

    .venv/bin/python benchmarks/scaling.py [--quick] [--repeats 5] [--json out.json]
                                           [--model ... --device ... --dtype ... --attn-implementation ... --batch-size 2]

SmolLM2-135M-Instruct (sdpa) by default, any decoder with --model. Inference: prefill time of LoFiT (10% of
heads), soft injection and ZeroTuning (all heads) over the bare model. Training: one AdamW step of LoFiT (every
head of the middle or last three layers) and ZeroTuning (all heads) over PEFT LoRA (r = 8, q/v). Both at three
sequence lengths (half, once and twice --length, at --batch-size) and three batch sizes (half, once and twice
--batch-size, at --length): by default 64 / 128 / 256 tokens at batch 2 and batch 1 / 2 / 4 at 128 tokens; then
LoFiT on 1/30 of the heads up to all of them (9 to 270 on SmolLM2; the top of a random score, so spread over the
layers) at --batch-size x --length. Every cell is its own interleaved run (``--repeats`` rounds from 512 tokens a
batch up, proportionally more below): median of the per-round ratios, 95% bootstrap interval. Plot:
plots/scaling.png (``--out``). Each variant is a copy of the model: up to nine copies are held at once.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from common import (PLOTS, add_model_arguments, bootstrap_median, interleaved_ratios, load_model, markdown_table, median,
                    model_note, publish, pyplot, save_figure)
from overhead import timers, variants
from train_cost import LORA, batch, build, method_names, stepper

import headwise
from headwise.heads import top_k_heads
from headwise.progress import disable_progress_bars
from lofit import LofitConfig

INFERENCE = ["bare", "LoFiT 10% heads", "soft injection all heads", "ZeroTuning all heads"]
TRAINING = ["lora", "lofit-middle", "lofit-last", "zerotuning"]  # train_cost.KINDS
HEAD_SHARES = [1 / 30, 0.1, 0.3, 0.5, 1.0]  # of all heads: 9, 27, 81, 135, 270 on SmolLM2


def grid(size: int, length: int) -> list[tuple[int, int]]:
    """(batch, length) cells: three lengths at ``size``, then the two other batch sizes at ``length``."""
    cells = [(size, max(1, length // 2)), (size, length), (size, 2 * length), (max(1, size // 2), length), (2 * size, length)]
    return list(dict.fromkeys(cells))


def head_counts(total: int) -> list[int]:
    """How many heads the sweep adapts, each once: ``HEAD_SHARES`` of ``total``."""
    return list(dict.fromkeys(max(1, round(share * total)) for share in HEAD_SHARES))


def summarise(ratios: dict[str, list[float]]) -> dict[str, dict]:
    return {name: {"median": median(v), "ci95": list(bootstrap_median(v)), "ratios": v} for name, v in ratios.items()}


def rounds_for(repeats: int, size: int, length: int) -> int:
    """``repeats`` rounds at 512 tokens a batch and above, proportionally more for smaller (cheaper, noisier) ones."""
    return max(repeats, round(repeats * 512 / (size * length)))


def grid_cells(base, repeats: int, cells: list[tuple[int, int]]) -> dict[str, dict]:
    """Prefill over bare and step time over LoRA at every (batch, length) of ``cells``."""
    models = variants(base, INFERENCE)
    trainers = {name: build(name, copy.deepcopy(base)) for name in method_names(base, TRAINING)}
    vocab, device = base.config.vocab_size, base.device
    out = {}
    for seed, (size, length) in enumerate(cells):
        rounds = rounds_for(repeats, size, length)
        prefill = timers(size, length, vocab, device)["prefill"]
        runs = {name: (lambda model=model: prefill(model)) for name, model in models.items()}
        with torch.no_grad():
            out[f"prefill / bare, {size} x {length}"] = summarise(interleaved_ratios(runs, "bare", rounds, seed))
        data = batch(vocab, size, length, device)
        steps = {name: stepper(model, data) for name, model in trainers.items()}
        out[f"train step / LoRA, {size} x {length}"] = summarise(interleaved_ratios(steps, LORA, rounds, seed, warmup=1))
    return out


def head_sweep(base, repeats: int, size: int = 2, length: int = 128) -> dict[str, dict]:
    """LoFiT on a growing number of heads: prefill over bare, step time over LoRA."""
    sites = headwise.find_head_sites(base)
    scores = torch.rand(len(sites), sites[0].num_heads, generator=torch.Generator().manual_seed(0))
    adapted = {f"LoFiT {k} heads": headwise.wrap(copy.deepcopy(base), LofitConfig(heads=top_k_heads(scores, k), init_weights=False))
               for k in head_counts(len(sites) * sites[0].num_heads)}
    prefill = timers(size, length, base.config.vocab_size, base.device)["prefill"]
    models = {"bare": copy.deepcopy(base), **adapted}
    for model in models.values():
        model.eval()
    runs = {name: (lambda model=model: prefill(model)) for name, model in models.items()}
    with torch.no_grad():
        inference = summarise(interleaved_ratios(runs, "bare", rounds_for(repeats, size, length), seed=10))
    data = batch(base.config.vocab_size, size, length, base.device)
    steps = {LORA: stepper(build(LORA, copy.deepcopy(base)), data)}
    steps.update({name: stepper(model, data) for name, model in adapted.items()})
    training = summarise(interleaved_ratios(steps, LORA, rounds_for(repeats, size, length), seed=11, warmup=1))
    return {f"prefill / bare, heads, {size} x {length}": inference, f"train step / LoRA, heads, {size} x {length}": training}


def table(results: dict[str, dict]) -> str:
    rows = []
    for cell, ratios in results.items():
        for name, figure in ratios.items():
            low, high = figure["ci95"]
            rows.append([cell, name, f"{figure['median']:.3f}", f"[{low:.3f}–{high:.3f}]"])
    return markdown_table(["measure, shape", "variant", "ratio", "95% CI"], rows)


def plot(results: dict[str, dict], size: int, length: int, folder: Path) -> Path:
    """The ratios against length (at ``size``), batch size (at ``length``) and adapted heads, as plots/scaling.png."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    axes_for = {("prefill", "length"): axes[0, 0], ("prefill", "batch"): axes[0, 1], ("prefill", "heads"): axes[0, 2],
                ("train", "length"): axes[1, 0], ("train", "batch"): axes[1, 1], ("train", "heads"): axes[1, 2]}
    for kind, reference in (("prefill", "bare"), ("train", "LoRA")):
        grid = {key: value for key, value in results.items() if key.startswith(kind) and ", heads," not in key}
        shape = {key: tuple(int(v) for v in key.rsplit(", ", 1)[1].split(" x ")) for key in grid}
        for axis_name, fixed, varying in (("length", lambda s: s[0] == size, 1), ("batch", lambda s: s[1] == length, 0)):
            ax = axes_for[(kind, axis_name)]
            keys = sorted((k for k in grid if fixed(shape[k])), key=lambda k: shape[k][varying])
            for name in grid[keys[0]]:
                x = [shape[k][varying] for k in keys]
                ax.errorbar(x, [grid[k][name]["median"] for k in keys], fmt="o-", label=name, capsize=3,
                            yerr=[[grid[k][name]["median"] - grid[k][name]["ci95"][0] for k in keys],
                                  [grid[k][name]["ci95"][1] - grid[k][name]["median"] for k in keys]])
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xlabel(f"sequence length (batch {size})" if axis_name == "length" else f"batch size ({length} tokens)")
            ax.set_ylabel(f"{kind} time / {reference}")
            ax.legend(fontsize=7)
        heads = next(value for key, value in results.items() if key.startswith(kind) and ", heads," in key)
        ax = axes_for[(kind, "heads")]
        names = [n for n in heads if n.startswith("LoFiT")]
        x = [int(n.split()[1]) for n in names]
        ax.errorbar(x, [heads[n]["median"] for n in names], fmt="o-", capsize=3, label="LoFiT",
                    yerr=[[heads[n]["median"] - heads[n]["ci95"][0] for n in names], [heads[n]["ci95"][1] - heads[n]["median"] for n in names]])
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(f"adapted heads (batch {size} x {length})")
        ax.set_ylabel(f"{kind} time / {reference}")
    folder.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, str(folder.resolve() / "scaling.png"))  # an absolute name: save_figure keeps it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--length", type=int, default=128, help="tokens per row of the batch and head sweeps")
    parser.add_argument("--quick", action="store_true", help="2 rounds per cell: a smoke run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--out", type=Path, default=PLOTS, help="where the plot goes (default benchmarks/plots)")
    add_model_arguments(parser, batch_size=2)
    args = parser.parse_args()
    disable_progress_bars()
    repeats = 2 if args.quick else args.repeats
    base, _ = load_model(args)
    cells = grid(args.batch_size, args.length)
    results = {**grid_cells(base, repeats, cells), **head_sweep(base, repeats, args.batch_size, args.length)}
    path = plot(results, args.batch_size, args.length, args.out)
    settings = (f"{model_note(args)}. {repeats} interleaved rounds per cell after a warm-up (x 512 / tokens a batch below 512: "
                f"{', '.join(f'{rounds_for(repeats, *shape)} at {shape[0]} x {shape[1]}' for shape in cells)}); median of "
                f"per-round ratios, 95% bootstrap interval. Plot: `{path.name}`.")
    publish("Cost against sequence length, batch size and adapted heads", settings, table(results), args, results=results)


if __name__ == "__main__":
    main()
