"""Inference cost of headwise adapters against the bare model, measured side by side in one run.

    .venv/bin/python benchmarks/overhead.py [--quick] [--repeats 10] [--json out.json]
                                            [--model ... --device ... --dtype ... --attn-implementation ... --batch-size 8]

SmolLM2-135M-Instruct by default (any decoder with --model), prefill of batch 8 x 128 tokens and one decoding
step (batch 8, 128 cached tokens), for the bare model, LoFiT on 10% of heads and on all heads, soft injection and
ZeroTuning on all heads, and merged LoFiT (10%), under --attn-implementation (sdpa) and eager (``--backends``
names others; --quick: the first only), with a second copy of the bare model as an A/A control and the share of
each call spent inside headwise's hooks. Every variant is a copy of the model: ``--variants`` names fewer for a
large one. Every round times each variant once in a shuffled order
(after a warm-up; decode steps get 2x as many rounds, each the fastest of three steps); a variant's figure is the median of its per-round
ratio to the bare model of the same round, with a 95% bootstrap interval over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from pathlib import Path

import torch

from common import (PLOTS, add_model_arguments, bootstrap_median, interleaved_ratios, load_model, markdown_table, median,
                    model_note, publish, pyplot, save_figure)

import headwise
from headwise.adapter import HeadLayer
from headwise.hooks import _SiteHooks
from headwise.heads import top_k_heads
from headwise.progress import disable_progress_bars
from lofit import LofitConfig
from soft_injection import inject
from zerotuning import ZeroTuningConfig



VARIANTS = ["bare", "bare, another copy (A/A control)", "LoFiT 10% heads", "LoFiT all heads", "soft injection all heads", "ZeroTuning all heads", "LoFiT 10% merged"]


def synchronize(device) -> None:
    """Wait for ``device``'s queued kernels: a GPU call returns before it has run, so a timer must wait for it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def variants(base, names=VARIANTS) -> dict[str, torch.nn.Module]:
    """The models to time, each an independent copy of ``base`` (so all weights sit in the same kind of memory:
    a loaded checkpoint may be file-backed, a copy is not), adapted with non-identity weights."""
    sites = headwise.find_head_sites(base)
    scores = torch.rand(len(sites), sites[0].num_heads, generator=torch.Generator().manual_seed(0))
    tenth = top_k_heads(scores, 0.1)
    builders = {
        "bare": lambda: copy.deepcopy(base),
        "bare, another copy (A/A control)": lambda: copy.deepcopy(base),
        "LoFiT 10% heads": lambda: headwise.wrap(copy.deepcopy(base), LofitConfig(heads=tenth, init_weights=False)),
        "LoFiT all heads": lambda: headwise.wrap(copy.deepcopy(base), LofitConfig(heads="all", init_weights=False)),
        "soft injection all heads": lambda: inject(copy.deepcopy(base), torch.randn(len(sites), sites[0].num_heads, sites[0].head_dim,
                                                                                    dtype=base.dtype, device=base.device)),
        "ZeroTuning all heads": lambda: headwise.wrap(copy.deepcopy(base), ZeroTuningConfig(heads="all", gamma=1.5)),
        "LoFiT 10% merged": lambda: builders["LoFiT 10% heads"]().merge_and_unload(),
    }
    out = {name: builders[name]() for name in names}
    for model in out.values():
        model.eval()
    return out


DECODE_BEST_OF = 3


def timers(batch: int, length: int, vocab: int, device="cpu"):
    """Timed calls, each the fastest of ``best_of``: ``prefill(model, best_of=1)``, ``decode step(model, best_of=3)``."""
    ids = torch.randint(10, vocab, (batch, length), generator=torch.Generator().manual_seed(1)).to(device)
    mask = torch.ones_like(ids)

    def prefill(model, best_of: int = 1):
        best = float("inf")
        for _ in range(best_of):
            synchronize(device)
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
        return best

    caches = {}

    def decode(model, best_of: int = DECODE_BEST_OF):
        key = id(model)
        if key not in caches:
            caches[key] = model(input_ids=ids, attention_mask=mask, use_cache=True).cache
        cache = caches[key]
        step_mask = torch.ones(batch, length + 1, dtype=torch.long, device=device)
        best = float("inf")
        for _ in range(best_of):  # a step is ~100 ms: the fastest of three drops the scheduler's hiccups
            synchronize(device)
            start = time.perf_counter()
            model(input_ids=ids[:, -1:], attention_mask=step_mask, cache=cache, use_cache=True, logits_to_keep=1)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
            cache.crop(-1)  # drop the step just added
        return best

    return {"prefill": prefill, "decode step": decode}


HOOK_METHODS = ("before_attention", "after_attention", "before_output", "after_output")  # headwise.hooks' site hooks


@contextlib.contextmanager
def timed_hooks(model):
    """Re-attach every headwise holder of ``model`` with the site hooks timed; yields the running total (s)."""
    holders = [module for module in model.modules() if isinstance(module, HeadLayer) and module.is_attached]
    spent = [0.0]
    originals = {name: getattr(_SiteHooks, name) for name in HOOK_METHODS}

    def timed(method):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return run

    for holder in holders:  # the hooks are bound when a site's first edit attaches: re-attach to time them
        holder.detach()
    for name, method in originals.items():
        setattr(_SiteHooks, name, timed(method))
    for holder in holders:
        holder.attach()
    try:
        yield spent
    finally:
        for holder in holders:
            holder.detach()
        for name, method in originals.items():
            setattr(_SiteHooks, name, method)
        for holder in holders:
            holder.attach()


@torch.no_grad()
def hook_share(model, timer, runs: int = 3) -> float:
    """Median share of one call's wall time spent inside headwise's hook functions (0 without holders): the
    adapter's own work, measured inside one run and so free of the copy-to-copy spread of the ratios."""
    if not any(isinstance(module, HeadLayer) for module in model.modules()):
        return 0.0  # bare or merged: no hook of ours runs
    shares = []
    with timed_hooks(model) as spent:
        for _ in range(runs):
            before = spent[0]
            elapsed = timer(model, best_of=1)  # the hooks' total must be over the call that was timed
            shares.append((spent[0] - before) / elapsed)
    return median(shares)


def backends_of(args) -> list[str]:
    """The attention implementations to time: ``--backends``, else --attn-implementation and eager (--quick: the first)."""
    chosen = args.backends or list(dict.fromkeys([args.attn_implementation, "eager"]))
    return chosen[:1] if args.quick and not args.backends else chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="prefill rounds (decode steps: 2x as many, each the best of 3)")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--backends", nargs="+", choices=["eager", "sdpa", "flash_attention_2"],
                        help="attention implementations to time, each a run of every variant (default: "
                             "--attn-implementation and eager; --quick: --attn-implementation only)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS[1:], default=VARIANTS[1:], metavar="VARIANT",
                        help="what to time against the bare model (default: all; each holds a copy of the model): "
                             + "; ".join(VARIANTS[1:]).replace("%", "%%"))
    parser.add_argument("--quick", action="store_true", help="3 rounds, one attention implementation: a smoke run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--out", type=Path, default=PLOTS, help="where the plot goes (default benchmarks/plots)")
    add_model_arguments(parser, batch_size=8)
    parser.add_argument("--batch", dest="batch_size", type=int, help=argparse.SUPPRESS)  # the earlier name of --batch-size
    args = parser.parse_args()
    disable_progress_bars()
    repeats = 3 if args.quick else args.repeats
    backends = backends_of(args)
    names = ["bare", *[name for name in VARIANTS[1:] if name in args.variants]]
    results = {}
    rows = []
    for backend in backends:
        base, _ = load_model(args, attn_implementation=backend)
        models = variants(base, names)
        for phase, timer in timers(args.batch_size, args.length, base.config.vocab_size, args.device).items():
            rounds = repeats * (2 if phase == "decode step" else 1)  # a decode step is ~15x shorter and noisier
            runs = {name: (lambda model=model: timer(model)) for name, model in models.items()}
            with torch.no_grad():
                ratios = interleaved_ratios(runs, "bare", rounds, seed=len(rows))
            for name, values in ratios.items():
                middle, (low, high) = median(values), bootstrap_median(values)
                share = hook_share(models[name], timer)
                results[f"{backend} / {phase} / {name}"] = {"median": middle, "ci95": [low, high], "ratios": values,
                                                            "hook_share": share}
                rows.append([backend, phase, name, f"{middle:.3f}", f"[{low:.3f}–{high:.3f}]", f"{100 * share:.2f}%"])
        del models, base
    plot = _plot(results, args.out)
    settings = (f"{model_note(args, attn_implementation=' and '.join(backends))}. Batch {args.batch_size} x {args.length} tokens; "
                f"{repeats} interleaved prefill rounds and {2 * repeats} decode-step rounds (each the fastest of {DECODE_BEST_OF} "
                "steps) after a warm-up; median of per-round ratios, 95% bootstrap interval. The A/A control (a second copy "
                "of the bare model) shows the spread between two identical models; 'inside hooks' is the share of a call's "
                "time spent in headwise's hook functions (timed in the call itself, median of 3; on a GPU, host time: the "
                f"kernels they queue run later), the adapter's own work without that spread. Plot: `{plot.name}`.")
    table = markdown_table(["attention", "phase", "variant", "time / bare", "95% CI", "inside hooks"], rows)
    publish("Inference overhead vs the bare model", settings, table, args, results=results)


def _plot(results, folder: Path) -> Path:
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
    folder.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, str(folder.resolve() / "overhead.png"))  # an absolute name: save_figure keeps it


if __name__ == "__main__":
    main()
