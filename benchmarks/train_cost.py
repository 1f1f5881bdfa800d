"""Training cost of headwise methods against PEFT LoRA and IA3, measured side by side in one run.

    .venv/bin/python benchmarks/train_cost.py [--quick] [--repeats 5] [--json out.json]

One optimiser step (forward, backward, AdamW) on the same batch (8 x 128 tokens) of SmolLM2-135M-Instruct
for LoFiT (27 heads = 10%, placed in the first, middle or last three layers, and on all heads), soft
injection and ZeroTuning on all heads, PEFT LoRA (r = 8 on q/v) and IA3. Step time: interleaved rounds
after a warm-up, the median of each method's per-round ratio to LoRA. Peak memory: each method in a
fresh process, the peak resident set while it runs two steps (VmHWM, reset after loading) as a ratio
to LoRA's, so no method inherits another's allocations and loading does not count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import interleaved_ratios, machine, markdown_table, median

METHODS = ["LoRA r=8 q,v", "IA3", "LoFiT 10%, layers 0-2", "LoFiT 10%, layers 13-15", "LoFiT 10%, layers 27-29",
           "LoFiT all heads", "soft injection all heads", "ZeroTuning all heads"]


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
    if name.startswith("LoFiT 10%"):
        first = int(name.rsplit(" ", 1)[1].split("-")[0])
        return headwise.wrap(base, LofitConfig(heads=[(layer, h) for layer in range(first, first + 3) for h in range(heads)]))
    if name == "LoFiT all heads":
        return headwise.wrap(base, LofitConfig(heads="all"))
    if name == "soft injection all heads":
        return inject(base, torch.randn(len(sites), heads, sites[0].head_dim))
    if name == "ZeroTuning all heads":
        return headwise.wrap(base, ZeroTuningConfig(heads="all", gamma=1.5))
    raise KeyError(name)


def batch(vocab: int, size: int = 8, length: int = 128) -> dict[str, torch.Tensor]:
    ids = torch.randint(10, vocab, (size, length), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def stepper(model, data):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step() -> float:
        start = time.perf_counter()
        model(**data).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory_child(name: str) -> None:
    """Run in a fresh process: build ``name``, reset the peak-RSS mark (``/proc/self/clear_refs``), run two
    steps; print the peak resident set of the steps in KiB (loading the model does not count)."""
    import headwise

    base, _ = headwise.load_bundled_model()
    step = stepper(build(name, base), batch(base.config.vocab_size))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    for _ in range(2):  # the second step holds the optimiser state and the activations at once
        step()
    print(_resident_kib("VmHWM"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 rounds, no memory processes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return peak_memory_child(args.child)
    import headwise
    from headwise.progress import disable_progress_bars

    disable_progress_bars()
    repeats = 3 if args.quick else args.repeats
    base, _ = headwise.load_bundled_model()
    data = batch(base.config.vocab_size)
    import copy

    steps = {name: stepper(build(name, copy.deepcopy(base)), data) for name in METHODS}
    ratios = interleaved_ratios(steps, METHODS[0], repeats, warmup=1)
    ratios = {METHODS[0]: [1.0] * repeats, **ratios}
    memory = {}
    if not args.quick:
        for name in METHODS:
            out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=True)
            memory[name] = int(out.stdout.strip().splitlines()[-1])
    rows = []
    for name in METHODS:
        middle = median(ratios[name])
        mem = f"{memory[name] / memory[METHODS[0]]:.3f} ({memory[name] / 1024:.0f} MiB)" if memory else "-"
        rows.append([name, f"{middle:.3f} [{min(ratios[name]):.3f}–{max(ratios[name]):.3f}]", mem])
    print(f"# Training step cost vs PEFT LoRA ({machine()})\n")
    print(f"Batch 8 x 128 tokens, AdamW; {repeats} interleaved rounds after a warm-up: median [min–max] of the per-round "
          "ratio to LoRA. Peak memory: peak RSS of a fresh process during two steps (reset after loading), ratio to LoRA's.\n")
    print(markdown_table(["method", "step time / LoRA", "peak memory / LoRA"], rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "ratios": ratios, "peak_rss_kib": memory}, indent=1))


if __name__ == "__main__":
    main()
