"""Mixed adapter batches (``adapter_names=``, one adapter per row) on SmolLM2-135M-Instruct, measured side by side.

    .venv/bin/python benchmarks/mixed_batches.py [--quick] [--adapters 1000] [--lora-adapters 32] [--repeats 4]
                                                 [--seeds 0 1 2] [--steps 10] [--n-test 4] [--json out.json] [--append]
                                                 [--model ... --device ... --dtype ... --attn-implementation ... --batch-size 32]

Any decoder with --model. --batch-size: the rows of (c)'s zero-shot evaluation batches (its 10-shot ICL batches
take a quarter as many); the batch of (a) and (b) is ``--rows``.

(a) ``--adapters`` LoFiT adapters on one model (offsets on 27 random heads each, ~10% of the 270; random,
non-identity values); a batch of ``--rows`` left-padded Function Vectors prompts (0 to ``--max-shots``
demonstrations, so lengths vary as real prompts do) run as a prefill (one forward) and a greedy ``generate``
of ``--new-tokens`` tokens, with one adapter active (the reference), and with ``adapter_names=`` naming
1 / 8 / 32 distinct adapters over the rows; also one adapter with only that one loaded. Every call draws its
adapters afresh from the loaded ones, so a mixed call always builds its bank (nothing cached between calls).
(b) The same for PEFT LoRA r=8 on q_proj and v_proj (``init_lora_weights=False``: non-identity), with
``--lora-adapters`` loaded (PEFT's ``add_adapter`` time grows with the adapters already there, so not 1,000)
and PEFT's own ``adapter_names=`` mixed batch on the same rows. Every variant of (a) and (b) runs once per
round in a shuffled order; a figure is the median of per-round ratios with a 95% bootstrap interval.
(c) Soft injection: one adapter per Function Vectors task (the 16 of soft_injection_vs_icl.py), each fitted
with ``soft_injection.fit`` (small budget, in the settings line), all on one model; the tasks' test queries
as zero-shot mixed batches (each row its task's adapter) against per-task runs (the task's adapter active,
its queries alone) and 10-shot ICL on the bare model (demonstrations drawn per query from the task's training
split): first-token accuracy and greedy exact match, mean [min-max] over seeds (a seed draws the split, the
extraction prompts, the demonstrations and the fitting batches); cost: one batch of 32 queries (2 per task)
as a mixed batch, per task (16 calls) and as a 10-shot ICL batch, interleaved, as ratios.
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import os
import random
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import headwise  # noqa: E402
import peft  # noqa: E402
from common import (PLOTS, add_model_arguments, apply_quick, bootstrap_median, load_model, markdown_table,  # noqa: E402
                    mean_spread, median, model_note, publish, pyplot, quick_help, save_figure, seed_note)
from headwise.experiments.data import few_shot_prompt, left_padded_batch, load_word_pairs  # noqa: E402
from headwise.experiments.evaluate import first_answer_token, is_exact_match  # noqa: E402
from headwise.progress import disable_progress_bars  # noqa: E402
from lofit import LofitConfig  # noqa: E402
from overhead import synchronize  # noqa: E402
from soft_injection import SoftInjectionConfig, fit  # noqa: E402
from soft_injection_vs_icl import TASKS  # noqa: E402  the same 16 Function Vectors tasks

QUICK = {"adapters": 200, "max_shots": 1, "repeats": 3, "generate_repeats": 2, "new_tokens": 8, "steps": 2, "eval_every": 2,
         "n_prompts": 3, "n_valid": 4, "n_test": 2, "si_repeats": 2}
DISTINCT = (1, 8, 32)
HEADS_SHARE = 0.1


# -- (a) and (b): many adapters, one batch ------------------------------------------------------------
def batch_prompts(rows: int, max_shots: int, seed: int = 0) -> list[str]:
    """``rows`` Function Vectors prompts of the 16 tasks with 0..max_shots demonstrations each."""
    rng = random.Random(seed)
    prompts = []
    for row in range(rows):
        task = load_word_pairs(TASKS[row % len(TASKS)], valid=0, test=0, seed=seed)
        query, *shots = rng.sample(task.train, max_shots + 1)
        prompts.append(few_shot_prompt(query["input"], shots[:rng.randint(0, max_shots)]))
    return prompts


def lofit_configs(count: int, sites: int, heads: int, seed: int = 0) -> list[LofitConfig]:
    """``count`` LoFiT configs, each on its own random ~10% of the heads, with random (non-identity) offsets."""
    rng = random.Random(seed)
    every = [(layer, head) for layer in range(sites) for head in range(heads)]
    k = round(HEADS_SHARE * len(every))
    return [LofitConfig(heads=sorted(rng.sample(every, k)), init_weights=False) for _ in range(count)]


def lora_config():
    return peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                           init_lora_weights=False, task_type="CAUSAL_LM")


def many_adapters(base, count: int, make):
    """``make(base copy, name)`` for the first adapter, then ``add_adapter`` for the rest; (model, names, seconds,
    seconds of the last add)."""
    names = [f"a{i:04d}" for i in range(count)]
    start = time.perf_counter()
    model = make(copy.deepcopy(base), names[0], 0)
    last = 0.0
    for i, name in enumerate(names[1:], 1):
        before = time.perf_counter()
        model.add_adapter(name, make(None, name, i))
        last = time.perf_counter() - before
    model.set_adapter(names[0])
    return model.eval(), names, time.perf_counter() - start, last


def row_names(rng: random.Random, pool: list[str], distinct: int, rows: int) -> list[str]:
    """``rows`` adapter names, ``distinct`` of them drawn from ``pool``, spread over the rows in a random order."""
    chosen = rng.sample(pool, distinct)
    names = [chosen[i % distinct] for i in range(rows)]
    rng.shuffle(names)
    return names


def timed_call(model, batch, pool, distinct, phase: str, rng: random.Random, generate_kwargs: dict):
    """A run for ``rounds``: one call of ``phase`` with one adapter active (``distinct`` None) or ``adapter_names=``
    over ``distinct`` adapters, drawn afresh each call; returns its seconds."""
    rows, device = batch["input_ids"].shape[0], batch["input_ids"].device

    @torch.no_grad()
    def run() -> float:
        kwargs = {}
        if distinct is None:
            model.set_adapter(rng.choice(pool))  # outside the timed call
        else:
            kwargs["adapter_names"] = row_names(rng, pool, distinct, rows)
        synchronize(device)
        start = time.perf_counter()
        if phase == "prefill":
            model(**batch, use_cache=False, logits_to_keep=1, **kwargs)
        else:
            model.generate(**batch, **generate_kwargs, **kwargs)
        synchronize(device)
        return time.perf_counter() - start

    return run


def rounds(runs: dict, repeats: int, seed: int, warmup=()) -> dict[str, list[float]]:
    """Every run once per round in a shuffled order (after one call of each run named in ``warmup``: a call
    costs seconds on 2 cores, so one per model); seconds per run and round."""
    for name in warmup:
        runs[name]()
    rng = random.Random(seed)
    times = {name: [] for name in runs}
    for _ in range(repeats):
        order = list(runs)
        rng.shuffle(order)
        for name in order:
            times[name].append(runs[name]())
    return times


def ratio(times: dict, numerator: str, denominator: str) -> dict:
    """Median of the per-round ratios and its 95% bootstrap interval."""
    values = [a / b for a, b in zip(times[numerator], times[denominator])]
    low, high = bootstrap_median(values)
    return {"median": median(values), "ci95": [low, high], "ratios": values}


def cell(figure: dict) -> str:
    return f"{figure['median']:.3f} [{figure['ci95'][0]:.3f}–{figure['ci95'][1]:.3f}]"


def many_adapter_part(base, tokenizer, args, log) -> dict:
    sites = headwise.find_head_sites(base)
    configs = lofit_configs(args.adapters, len(sites), sites[0].num_heads)
    ours, names, ours_seconds, ours_last = many_adapters(
        base, args.adapters, lambda model, name, i: configs[i] if model is None else headwise.wrap(model, configs[i], adapter_name=name))
    log(f"{args.adapters} LoFiT adapters added in {ours_seconds:.0f} s (the last in {1000 * ours_last:.0f} ms)")
    single, _, _, _ = many_adapters(base, 1, lambda model, name, i: headwise.wrap(model, configs[0], adapter_name=name))
    lora, lora_names, lora_seconds, lora_last = many_adapters(
        base, args.lora_adapters, lambda model, name, i: lora_config() if model is None else peft.get_peft_model(model, lora_config(), adapter_name=name))
    log(f"{args.lora_adapters} LoRA adapters added in {lora_seconds:.0f} s (the last in {1000 * lora_last:.0f} ms)")
    ours_bytes = headwise.adapter_memory(ours)
    lora_bytes = sum(p.numel() * p.element_size() for n, p in lora.named_parameters() if f".{lora_names[0]}." in n)

    prompts = batch_prompts(args.rows, args.max_shots)
    batch = left_padded_batch(tokenizer, prompts, args.device)
    lengths = batch["attention_mask"].sum(1).tolist()
    generate_kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)
    variants = {"headwise, 1 loaded, 1 active": (single, names[:1], None),
                "headwise, 1 active": (ours, names, None),
                **{f"headwise, {k} distinct": (ours, names, k) for k in DISTINCT},
                "LoRA, 1 active": (lora, lora_names, None),
                **{f"LoRA, {k} distinct": (lora, lora_names, k) for k in DISTINCT}}
    results = {}
    for phase, repeats in (("prefill", args.repeats), ("generate", args.generate_repeats)):
        runs = {name: timed_call(model, batch, pool, k, phase, random.Random(f"{name} {phase}"), generate_kwargs)
                for name, (model, pool, k) in variants.items()}
        start = time.perf_counter()
        times = rounds(runs, repeats, seed=len(results), warmup=[f"headwise, {max(DISTINCT)} distinct",
                       f"LoRA, {max(DISTINCT)} distinct", "headwise, 1 loaded, 1 active"])
        log(f"{phase}: {repeats} rounds of {len(runs)} variants in {time.perf_counter() - start:.0f} s")
        figures = {"loaded": ratio(times, "headwise, 1 active", "headwise, 1 loaded, 1 active")}
        for library in ("headwise", "LoRA"):
            for k in DISTINCT:
                figures[f"{library} {k}"] = ratio(times, f"{library}, {k} distinct", f"{library}, 1 active")
        figures["vs LoRA active"] = ratio(times, "headwise, 1 active", "LoRA, 1 active")
        for k in DISTINCT:
            figures[f"vs LoRA {k}"] = ratio(times, f"headwise, {k} distinct", f"LoRA, {k} distinct")
        figures["seconds"] = times  # per variant and round, for tools (the tables give ratios only)
        results[phase] = figures
    del ours, single, lora
    gc.collect()
    return {"results": results, "lengths": lengths, "adapters": args.adapters, "lora_adapters": args.lora_adapters,
            "heads_per_adapter": len(configs[0].heads),
            "headwise_bytes_per_adapter": sum(ours_bytes.values()) / len(ours_bytes), "lora_bytes_per_adapter": lora_bytes,
            "headwise_add_seconds": ours_seconds, "headwise_last_add_seconds": ours_last,
            "lora_add_seconds": lora_seconds, "lora_last_add_seconds": lora_last}


def many_adapter_tables(part: dict, args) -> tuple[str, str]:
    results = part["results"]
    rows = []
    for phase, figures in results.items():
        rows.append([phase, f"1 of {args.adapters} loaded vs 1 of 1", cell(figures["loaded"]), "", ""])
        rows.append([phase, "1 adapter active (reference)", "1", "1", cell(figures["vs LoRA active"])])
        for k in DISTINCT:
            rows.append([phase, f"adapter_names=, {k} distinct", cell(figures[f"headwise {k}"]),
                         cell(figures[f"LoRA {k}"]), cell(figures[f"vs LoRA {k}"])])
    header = ["phase", "batch", f"headwise ({args.adapters} loaded): time / 1 active",
              f"LoRA ({args.lora_adapters} loaded): time / 1 active", "headwise time / LoRA time"]
    lengths = sorted(part["lengths"])
    settings = (f"(a, b) Batch of {args.rows} left-padded Function Vectors prompts with 0–{args.max_shots} demonstrations "
                f"({lengths[0]}–{lengths[-1]} tokens, median {median(lengths):.0f}); prefill = one forward, generate = "
                f"{args.new_tokens} greedy tokens. headwise: {args.adapters} LoFiT adapters (offsets on {part['heads_per_adapter']} "
                f"random heads each, random values), {part['headwise_bytes_per_adapter'] / 1024:.1f} KB each, added with add_adapter in "
                f"{part['headwise_add_seconds']:.0f} s (the last add {1000 * part['headwise_last_add_seconds']:.0f} ms: the time "
                f"of an add grows with the adapters already there). LoRA: r=8 on q_proj and v_proj, {args.lora_adapters} adapters "
                f"({part['lora_bytes_per_adapter'] / 1024:.0f} KB each) added in {part['lora_add_seconds']:.0f} s, the last "
                f"add_adapter taking {part['lora_last_add_seconds']:.1f} s (PEFT walks every module, adapters' included, on each "
                f"add: 1,000 would take far longer than this run). Adapters drawn afresh for every call. {args.repeats} prefill "
                f"and {args.generate_repeats} generate rounds, every variant once per round in a shuffled order; median of "
                f"per-round ratios [95% bootstrap interval].")
    return settings, markdown_table(header, rows)


# -- (c) soft injection: 16 task adapters in one mixed batch -------------------------------------------
@torch.no_grad()
def answers(model, tokenizer, prompts, names=None, batch_size: int = 32, new_tokens: int = 6):
    """(first generated token ids, greedy answers up to the first newline) of every prompt, in batches of
    ``batch_size``, each row on ``names[i]`` (``adapter_names=``) or on the model as it is (names None)."""
    firsts, texts, device = [], [], next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        batch = left_padded_batch(tokenizer, prompts[start:start + batch_size], device)
        kwargs = {} if names is None else {"adapter_names": names[start:start + batch_size]}
        out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, **kwargs)
        new = out[:, batch["input_ids"].shape[1]:]
        firsts += new[:, 0].tolist()  # greedy: the first generated token is the prompt's argmax next token
        texts += [text.split("\n")[0].strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return firsts, texts


def scores(tokenizer, prompts, expected, firsts, texts) -> tuple[list[bool], list[bool]]:
    first = [f == first_answer_token(tokenizer, p, a) for p, a, f in zip(prompts, expected, firsts)]
    return first, [is_exact_match(t, a) for t, a in zip(texts, expected)]


def fit_tasks(base, tokenizer, args, seed: int, log):
    """One model carrying one fitted soft injection adapter per task; the tasks' splits."""
    model, tasks = copy.deepcopy(base), {}
    start = time.perf_counter()
    for name in TASKS:
        task = load_word_pairs(name, valid=args.n_valid, test=args.n_test, seed=seed)
        config = SoftInjectionConfig(n_prompts=args.n_prompts, n_shots=10)
        model, _ = fit(model, tokenizer, task.train, task.valid, config=config, steps=args.steps, lr=0.2, batch_size=8,
                       eval_every=args.eval_every, seed=seed, adapter_name=name, loss=args.loss)
        tasks[name] = task
    log(f"seed {seed}: {len(TASKS)} soft injection adapters fitted in {time.perf_counter() - start:.0f} s")
    return model.eval(), tasks


def soft_injection_part(base, tokenizer, args, log) -> dict:
    runs, cost = {}, None
    for seed in args.seeds:
        model, tasks = fit_tasks(base, tokenizer, args, seed, log)
        rng = random.Random(seed)
        queries = [(name, item, rng.sample(task.train, 10)) for name, task in tasks.items() for item in task.test]
        rng.shuffle(queries)  # the mixed batches hold every task
        names = [name for name, _, _ in queries]
        expected = [item["output"] for _, item, _ in queries]
        zero = [few_shot_prompt(item["input"]) for _, item, _ in queries]
        icl = [few_shot_prompt(item["input"], shots) for _, item, shots in queries]
        start = time.perf_counter()
        mixed = answers(model, tokenizer, zero, names, args.batch_size)
        per_task = [None] * len(queries)
        for name in TASKS:
            rows = [i for i, n in enumerate(names) if n == name]
            model.set_adapter(name)
            firsts, texts = answers(model, tokenizer, [zero[i] for i in rows], batch_size=args.batch_size)
            for i, f, t in zip(rows, firsts, texts):
                per_task[i] = (f, t)
        per_task = ([f for f, _ in per_task], [t for _, t in per_task])
        with model.disable_adapter():
            order = sorted(range(len(icl)), key=lambda i: len(icl[i]))  # similar lengths together: less padding
            firsts, texts = answers(model, tokenizer, [icl[i] for i in order], batch_size=max(1, args.batch_size // 4))
            icl_out = ([None] * len(icl), [None] * len(icl))
            for i, f, t in zip(order, firsts, texts):
                icl_out[0][i], icl_out[1][i] = f, t
            bare = answers(model, tokenizer, zero, batch_size=args.batch_size)
        log(f"seed {seed}: evaluated {len(queries)} queries in {time.perf_counter() - start:.0f} s")
        run = {"mixed": scores(tokenizer, zero, expected, *mixed), "per-task": scores(tokenizer, zero, expected, *per_task),
               "icl": scores(tokenizer, icl, expected, *icl_out), "zero": scores(tokenizer, zero, expected, *bare)}
        run["same first token"] = sum(a == b for a, b in zip(mixed[0], per_task[0]))
        run["same answer"] = sum(a == b for a, b in zip(mixed[1], per_task[1]))
        run["items"], run["names"] = len(queries), names
        runs[seed] = run
        if cost is None:
            cost = soft_injection_cost(model, tokenizer, tasks, args, seed)
        del model
        gc.collect()
    return {"runs": runs, "cost": cost}


def soft_injection_cost(model, tokenizer, tasks, args, seed: int) -> dict:
    """One batch of 32 queries (2 per task): mixed batch, per task (16 calls), 10-shot ICL batch; ratios per round."""
    rng = random.Random(seed + 1000)
    queries = [(name, item, rng.sample(task.train, 10)) for name, task in tasks.items() for item in task.test[:2]]
    rng.shuffle(queries)
    names = [name for name, _, _ in queries]
    device = next(model.parameters()).device
    zero = left_padded_batch(tokenizer, [few_shot_prompt(item["input"]) for _, item, _ in queries], device)
    icl = left_padded_batch(tokenizer, [few_shot_prompt(item["input"], shots) for _, item, shots in queries], device)
    groups = {name: left_padded_batch(tokenizer, [few_shot_prompt(item["input"]) for n, item, _ in queries if n == name], device)
              for name in TASKS}
    results = {}
    for phase in ("first token", "answer"):
        def call(batch, **kwargs):
            if phase == "first token":
                model(**batch, logits_to_keep=1, **kwargs)
            else:
                model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id, **kwargs)
            synchronize(device)  # a GPU call returns before its kernels have run: the timer waits for them

        @torch.no_grad()
        def mixed():
            start = time.perf_counter()
            call(zero, adapter_names=names)
            return time.perf_counter() - start

        @torch.no_grad()
        def per_task():
            spent = 0.0
            for name, batch in groups.items():
                model.set_adapter(name)  # switching is outside the timed calls
                start = time.perf_counter()
                call(batch)
                spent += time.perf_counter() - start
            return spent

        @torch.no_grad()
        def icl_batch():
            with model.disable_adapter():
                start = time.perf_counter()
                call(icl)
                return time.perf_counter() - start

        # no warm-up: the same model just ran these shapes in the accuracy runs
        times = rounds({"mixed": mixed, "per-task": per_task, "icl": icl_batch}, args.si_repeats, seed=len(results))
        results[phase] = {"icl / mixed": ratio(times, "icl", "mixed"), "per-task / mixed": ratio(times, "per-task", "mixed"),
                          "seconds": times}
    results["tokens"] = {"zero-shot width": zero["input_ids"].shape[1], "icl width": icl["input_ids"].shape[1]}
    return results


def soft_injection_tables(part: dict, args) -> tuple[str, str]:
    runs, seeds = part["runs"], args.seeds
    share = lambda values: sum(values) / len(values)  # noqa: E731
    rows = []
    for key, title in (("mixed", "soft injection, mixed batch (16 adapters, adapter_names=)"),
                       ("per-task", "soft injection, per task (its adapter active, its queries alone)"),
                       ("icl", "10-shot ICL, bare model"), ("zero", "0-shot, bare model")):
        rows.append([title, mean_spread([share(runs[s][key][0]) for s in seeds], 3),
                     mean_spread([share(runs[s][key][1]) for s in seeds], 3)])
    same_first = sum(runs[s]["same first token"] for s in seeds)
    same_answer = sum(runs[s]["same answer"] for s in seeds)
    total = sum(runs[s]["items"] for s in seeds)
    accuracy = markdown_table(["queries", "first-token accuracy", "exact match"], rows)
    cost_rows = []
    for phase, figures in part["cost"].items():
        if phase != "tokens":
            cost_rows.append([phase, cell(figures["icl / mixed"]), cell(figures["per-task / mixed"])])
    widths = part["cost"]["tokens"]
    cost = markdown_table(["call", "10-shot ICL batch time / mixed batch time", "per-task runs time / mixed batch time"], cost_rows)
    budget = (f"{args.steps} Adam steps (lr 0.2, batch 8, {args.loss} loss), validation on {args.n_valid} items every "
              f"{args.eval_every} steps, best kept" if args.steps else f"0 steps ({args.n_valid} validation items)")
    settings = (f"(c) {len(TASKS)} Function Vectors tasks, one soft injection adapter each on one model, fitted with "
                f"soft_injection.fit: task embedding from {args.n_prompts} ten-shot prompts, {budget} — a small budget, "
                f"so the accuracies are below soft_injection_vs_icl.py's. {args.n_test} test queries per task "
                f"({len(TASKS) * args.n_test} per seed) in mixed batches of {args.batch_size}; greedy, first token and exact match "
                f"(6 new tokens). {seed_note(seeds)} Mixed batch and per-task runs gave the same first token on "
                f"{same_first} of {total} queries and the same answer on {same_answer} of {total}. Cost (seed {seeds[0]}): "
                f"32 queries, 2 per task; zero-shot batch {widths['zero-shot width']} tokens wide, 10-shot ICL batch "
                f"{widths['icl width']}; {args.si_repeats} interleaved rounds; median ratio [95% bootstrap interval]; "
                f"'answer' = generate 6 tokens.")
    return settings, accuracy + "\n\n" + cost


def plot(many: dict | None, soft: dict | None, args) -> Path | None:
    """The ratios of (a, b) and the accuracies of (c), as plots/mixed_batches.png (``--out``)."""
    plt = pyplot()
    panels = (many is not None) * 2 + (soft is not None)
    if not panels:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    if many is not None:
        ax, vs = axes.pop(0), axes.pop(0)
        for phase, style in (("prefill", "-o"), ("generate", "--s")):
            figures = many["results"][phase]
            for library, color in (("headwise", "tab:blue"), ("LoRA", "tab:orange")):
                points = [figures[f"{library} {k}"] for k in DISTINCT]
                ax.errorbar(DISTINCT, [p["median"] for p in points], fmt=style, color=color, capsize=3,
                            yerr=[[p["median"] - p["ci95"][0] for p in points], [p["ci95"][1] - p["median"] for p in points]],
                            label=f"{library} {phase}")
            points = [figures[f"vs LoRA {k}"] for k in DISTINCT]
            vs.errorbar(DISTINCT, [p["median"] for p in points], fmt=style, color="tab:green", capsize=3,
                        yerr=[[p["median"] - p["ci95"][0] for p in points], [p["ci95"][1] - p["median"] for p in points]],
                        label=phase)
        ax.axhline(1.15, color="grey", lw=0.8, ls=":", label="target 1.15")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set(xscale="log", xticks=DISTINCT, xticklabels=map(str, DISTINCT), xlabel="distinct adapters in the batch of 32",
               ylabel="time / same batch, 1 adapter active", title=f"headwise ({args.adapters} loaded) vs LoRA ({args.lora_adapters})")
        ax.legend(fontsize=7)
        vs.axhline(1.0, color="black", lw=0.8)
        vs.set(xscale="log", xticks=DISTINCT, xticklabels=map(str, DISTINCT), xlabel="distinct adapters in the batch of 32",
               ylabel="headwise time / LoRA time", title="same rows, adapter_names=")
        vs.legend(fontsize=7)
    if soft is not None:
        ax = axes.pop(0)
        keys = [("mixed", "mixed\nbatch"), ("per-task", "per\ntask"), ("icl", "10-shot\nICL"), ("zero", "0-shot\nbare")]
        for offset, (metric, label) in enumerate(((0, "first token"), (1, "exact match"))):
            values = [[sum(soft["runs"][s][k][metric]) / soft["runs"][s]["items"] for s in args.seeds] for k, _ in keys]
            means = [sum(v) / len(v) for v in values]
            ax.bar([i + 0.4 * offset for i in range(len(keys))], means, width=0.4, label=label,
                   yerr=[[m - min(v) for m, v in zip(means, values)], [max(v) - m for m, v in zip(means, values)]], capsize=3)
        ax.set_xticks([i + 0.2 for i in range(len(keys))], [k[1] for k in keys], fontsize=8)
        ax.set(ylabel="accuracy (mean, min–max over seeds)", title="16 soft injection adapters")
        ax.legend(fontsize=7)
    args.out.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, str(args.out.resolve() / "mixed_batches.png"))  # an absolute name: save_figure keeps it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["many", "soft_injection"], default=["many", "soft_injection"],
                        help="many: (a) and (b); soft_injection: (c)")
    parser.add_argument("--adapters", type=int, default=1000, help="LoFiT adapters loaded on the headwise model")
    parser.add_argument("--lora-adapters", type=int, default=32, help="LoRA adapters loaded (at least 32)")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-shots", type=int, default=3, help="prompts carry 0..max-shots demonstrations")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4, help="prefill rounds")
    parser.add_argument("--generate-repeats", type=int, default=2, help="generate rounds")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=4, help="soft injection: Adam steps per task")
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--n-prompts", type=int, default=4, help="soft injection: ten-shot prompts for the task embedding")
    parser.add_argument("--n-valid", type=int, default=4)
    parser.add_argument("--n-test", type=int, default=4, help="test queries per task")
    parser.add_argument("--loss", default="answer", choices=["answer", "first_token"])
    parser.add_argument("--si-repeats", type=int, default=3, help="soft injection cost rounds")
    parser.add_argument("--append", action="store_true", help="append the report to HISTORY.md")
    parser.add_argument("--quick", action="store_true", help=quick_help(QUICK))
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--out", type=Path, default=PLOTS, help="where the plot goes (default benchmarks/plots)")
    add_model_arguments(parser, batch_size=32)
    args = apply_quick(parser.parse_args(), QUICK)
    if args.lora_adapters < max(DISTINCT) or args.adapters < max(DISTINCT):
        parser.error(f"--adapters and --lora-adapters must be at least {max(DISTINCT)}")
    if args.n_test < 2:
        parser.error("--n-test must be at least 2 (the cost batch takes 2 queries per task)")
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    disable_progress_bars()
    began, load = time.perf_counter(), os.getloadavg()[0]
    log = lambda text: print(f"[{time.perf_counter() - began:5.0f} s] {text}", flush=True)  # noqa: E731
    base, tokenizer = load_model(args)
    many = many_adapter_part(base, tokenizer, args, log) if "many" in args.parts else None
    soft = soft_injection_part(base, tokenizer, args, log) if "soft_injection" in args.parts else None
    sections = []
    if many is not None:
        sections.append(many_adapter_tables(many, args))
    if soft is not None:
        sections.append(soft_injection_tables(soft, args))
    path = plot(many, soft, args)
    minutes = (time.perf_counter() - began) / 60
    root = Path(__file__).resolve().parent.parent
    shown = "none" if path is None else path.relative_to(root) if path.is_relative_to(root) else path
    settings = (f"{model_note(args)}; {minutes:.1f} min; load average {load:.1f} at the start, "
                f"{os.getloadavg()[0]:.1f} at the end (other processes share the cores: the ratios are interleaved for that). "
                f"Plot: `{shown}`.")
    body = "\n\n".join(f"{s}\n\n{t}" for s, t in sections)
    publish("Mixed adapter batches", settings, body, args, many=many, soft_injection=soft, minutes=minutes)


if __name__ == "__main__":
    main()
