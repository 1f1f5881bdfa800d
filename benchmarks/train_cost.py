"""Training cost of headwise methods against PEFT LoRA and IA3, measured side by side in one run.

    .venv/bin/python benchmarks/train_cost.py [--quick] [--repeats 5] [--json out.json]
                                              [--model ... --device ... --dtype ... --attn-implementation ... --batch-size 8]

One optimiser step (forward, backward, AdamW) on the same batch (8 x 128 tokens) of SmolLM2-135M-Instruct by
default (any decoder with --model) for LoFiT (every head of three layers, the first, middle or last three: 27
heads = 10% on SmolLM2; and on all heads), soft injection and ZeroTuning on all heads, PEFT LoRA (r = 8 on q/v)
and IA3. Step time: interleaved rounds after a warm-up, the median of each method's per-round ratio to LoRA.
Peak memory: each method in a fresh process, the peak resident set while it runs two steps (VmHWM, reset after
loading; on a GPU, the peak of allocated GPU memory) as a ratio to LoRA's, so no method inherits another's
allocations and loading does not count. Every method holds a copy of the model: ``--methods`` names fewer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import add_model_arguments, interleaved_ratios, load_model, markdown_table, median, model_note, publish
from overhead import synchronize

LORA = "LoRA r=8 q,v"
# what --methods names: LoRA (the reference), IA3, LoFiT on the first / middle / last three layers, and on all heads
KINDS = ["lora", "ia3", "lofit-first", "lofit-middle", "lofit-last", "lofit-all", "soft-injection", "zerotuning"]
FIXED = {"lora": LORA, "ia3": "IA3", "lofit-all": "LoFiT all heads", "soft-injection": "soft injection all heads",
         "zerotuning": "ZeroTuning all heads"}


def lofit_layers(num_layers: int, place: str) -> str:
    """The name of LoFiT on every head of three layers (fewer in a shallower model) at ``place`` (first, middle,
    last): ``LoFiT 10%, layers 13-15`` on SmolLM2's 30 layers of 9 heads."""
    span = min(3, num_layers)
    first = {"first": 0, "middle": (num_layers - span) // 2, "last": num_layers - span}[place]
    return f"LoFiT {round(100 * span / num_layers)}%, layers {first}-{first + span - 1}"


def method_names(base, kinds=KINDS) -> list[str]:
    """The methods' names on ``base`` (LoFiT's layers depend on its depth), each once, in ``KINDS`` order."""
    import headwise

    sites = headwise.find_head_sites(base)
    names = [FIXED.get(kind) or lofit_layers(len(sites), kind.split("-")[1]) for kind in kinds]
    return list(dict.fromkeys(names))


def build(name: str, base):
    """``base`` wrapped with ``name``'s method (non-identity weights, so the backward pass does real work)."""
    import peft

    import headwise
    from lofit import LofitConfig
    from soft_injection import inject
    from zerotuning import ZeroTuningConfig

    sites = headwise.find_head_sites(base)
    heads = sites[0].num_heads
    if name.startswith("LoRA"):
        return peft.get_peft_model(base, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    if name == "IA3":
        return peft.get_peft_model(base, peft.IA3Config(task_type="CAUSAL_LM"))
    if name.startswith("LoFiT") and ", layers " in name:
        first, last = map(int, name.rsplit(" ", 1)[1].split("-"))
        return headwise.wrap(base, LofitConfig(heads=[(layer, h) for layer in range(first, last + 1) for h in range(heads)]))
    if name == "LoFiT all heads":
        return headwise.wrap(base, LofitConfig(heads="all"))
    if name == "soft injection all heads":
        return inject(base, torch.randn(len(sites), heads, sites[0].head_dim, dtype=base.dtype, device=base.device))
    if name == "ZeroTuning all heads":
        return headwise.wrap(base, ZeroTuningConfig(heads="all", gamma=1.5))
    raise KeyError(name)


def batch(vocab: int, size: int = 8, length: int = 128, device="cpu") -> dict[str, torch.Tensor]:
    ids = torch.randint(10, vocab, (size, length), generator=torch.Generator().manual_seed(1)).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def stepper(model, data):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    device = data["input_ids"].device

    def step() -> float:
        synchronize(device)
        start = time.perf_counter()
        model(**data).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        return time.perf_counter() - start

    return step


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory_child(name: str, args) -> None:
    """Run in a fresh process: build ``name``, reset the peak-memory mark, run two steps; print the peak of the
    steps in KiB (loading the model does not count): resident set (``/proc/self/clear_refs``, VmHWM) on the
    CPU, allocated GPU memory on CUDA."""
    base, _ = load_model(args)
    step = stepper(build(name, base), batch(base.config.vocab_size, args.batch_size, args.length, args.device))
    on_gpu = torch.device(args.device).type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(args.device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    for _ in range(2):  # the second step holds the optimiser state and the activations at once
        step()
    print(torch.cuda.max_memory_allocated(args.device) // 1024 if on_gpu else _resident_kib("VmHWM"))


def model_flags(args) -> list[str]:
    """The model flags of this run, for the memory processes."""
    return ["--model", args.model, "--device", args.device, "--dtype", args.dtype, "--attn-implementation",
            args.attn_implementation, "--batch-size", str(args.batch_size), "--length", str(args.length)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--length", type=int, default=128, help="tokens per row")
    parser.add_argument("--methods", nargs="+", choices=KINDS[1:], default=KINDS[1:],
                        help="what to time against LoRA (default: all; each holds a copy of the model)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, no memory processes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_model_arguments(parser, batch_size=8)
    args = parser.parse_args()
    if args.child:
        return peak_memory_child(args.child, args)
    import copy

    from headwise.progress import disable_progress_bars

    disable_progress_bars()
    repeats = 3 if args.quick else args.repeats
    base, _ = load_model(args)
    methods = method_names(base, ["lora", *[kind for kind in KINDS[1:] if kind in args.methods]])
    data = batch(base.config.vocab_size, args.batch_size, args.length, args.device)
    steps = {name: stepper(build(name, copy.deepcopy(base)), data) for name in methods}
    del base
    ratios = interleaved_ratios(steps, LORA, repeats, warmup=1)
    ratios = {LORA: [1.0] * repeats, **ratios}
    memory = {}
    if not args.quick:
        del steps  # the memory processes have the device to themselves
        for name in methods:
            out = subprocess.run([sys.executable, __file__, "--child", name, *model_flags(args)], capture_output=True,
                                 text=True, check=True)
            memory[name] = int(out.stdout.strip().splitlines()[-1])
    rows = []
    for name in methods:
        middle = median(ratios[name])
        mem = f"{memory[name] / memory[LORA]:.3f} ({memory[name] / 1024:.0f} MiB)" if memory else "-"
        rows.append([name, f"{middle:.3f} [{min(ratios[name]):.3f}–{max(ratios[name]):.3f}]", mem])
    kind = "allocated GPU memory" if torch.device(args.device).type == "cuda" else "RSS"
    settings = (f"{model_note(args)}. Batch {args.batch_size} x {args.length} tokens, AdamW; {repeats} interleaved rounds after "
                f"a warm-up: median [min–max] of the per-round ratio to LoRA. Peak memory: peak {kind} of a fresh process "
                "during two steps (reset after loading), ratio to LoRA's.")
    table = markdown_table(["method", "step time / LoRA", "peak memory / LoRA"], rows)
    publish("Training step cost vs PEFT LoRA", settings, table, args, ratios=ratios, peak_rss_kib=memory, peak_memory=kind)


if __name__ == "__main__":
    main()
