"""Circuit reuse (Merullo, Eickhoff, Pavlick, ICLR 2024) with headwise on SmolLM2-135M-Instruct (any decoder with
--model, GPT-2 included): the Colored Objects task, candidate heads by activation patching, a repair by overriding
<= 4 heads' attention onto the distractor colours, where the repair acts (every head downstream of the repaired
ones frozen at its unrepaired output, and the converse), the same greedy search run over random head pools from
the same layers (the control), and the key-blocking control (top patching heads vs random heads blocked from the
question).

    .venv/bin/python benchmarks/circuit_reuse.py [--quick] [--seeds 0 1 2] [--items 240] [--random-pools 5] [--json out.json]
                                                 [--model ... --device ... --dtype ... --attn-implementation ... --batch-size 24]

Items are split per seed (deduplicated, then a third to search, the rest to test; the manifest is in the JSON):
heads are chosen on the search items only, every accuracy in the table is on the test items.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import time
from pathlib import Path

import torch

from common import (PLOTS, add_model_arguments, apply_quick, load_model, markdown_table, mean_spread, model_note, publish,
                    quick_help, seed_note)
from splits import manifest

import headwise
import interventions as iv
from headwise.experiments.colored_objects import COLOURS, ColoredObjectsItem as Item, make_items
from headwise.progress import disable_progress_bars

QUICK = {"seeds": [0], "items": 120, "random_pools": 3}


def encode(tokenizer, texts):
    """Left-padded with an attention mask; a tokenizer with no pad token (GPT-2's, Llama's) pads with its EOS token
    for this call only: the caller's tokenizer is left as it was."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    try:
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with: set tokenizer.pad_token")
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


def colour_ids(tokenizer) -> dict[str, int]:
    return {c: tokenizer(" " + c, add_special_tokens=False).input_ids[0] for c in COLOURS}


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each real token's index among its row's real tokens (pads: 0), as ``generate`` gives: under left padding a
    model with learned absolute positions (GPT-2) sees every prompt from position 0; rotary models are unchanged."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def on_device(encoding, device) -> dict[str, torch.Tensor]:
    """The model's inputs of ``encoding`` on ``device`` (the offsets stay where the position tools read them)."""
    mask = encoding["attention_mask"]
    return {"input_ids": encoding["input_ids"].to(device), "attention_mask": mask.to(device),
            "position_ids": position_ids(mask).to(device)}


def accuracy(logits: torch.Tensor, items: list[Item]) -> float:
    return float((logits.argmax(-1) == torch.tensor([item.answer for item in items])).float().mean())


def split_items(count: int, seed: int, tokens_of) -> tuple[list[Item], list[Item], dict]:
    """``count`` distinct items drawn by ``seed``: the first third to search (patching and the greedy search), the
    rest to test, with the split's manifest (raises if the two share an item)."""
    items, seen, drawn = [], set(), count
    while len(items) < count:
        drawn *= 2
        items, seen = [], set()
        for item in make_items(drawn, seed, tokens_of=tokens_of):  # the same seed gives the same first items
            if item.text not in seen and len(items) < count:
                seen.add(item.text)
                items.append(item)
    search, test = items[: count // 3], items[count // 3:]
    record = manifest("colored_objects", seed, search=[{"input": i.text} for i in search], test=[{"input": i.text} for i in test])
    return search, test, record


class LastTokenRuns:
    """The items in batches, each prompt but its last token run once into a KV cache: every intervention here
    acts at the last token only, so each variant costs one cached single-token step per batch (the same
    logits as a full forward; the patch and attention tools place positions by the cached length)."""

    def __init__(self, model, tokenizer, items: list[Item], ids: dict[str, int], batch_size: int = 24) -> None:
        self.model, self.items = model, items
        self.device = next(model.parameters()).device
        self.chunks = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            encoding = encode(tokenizer, [item.text for item in chunk])
            inputs = on_device(encoding, self.device)
            with torch.no_grad():
                prefix = model(**{name: value[:, :-1] for name, value in inputs.items()}, use_cache=True)
            options = torch.tensor([[ids[c] for c in item.colours] for item in chunk])
            self.chunks.append((chunk, encoding, prefix.cache, options))

    @torch.no_grad()
    def last_logits(self, chunk_index: int, context=None) -> torch.Tensor:
        chunk, encoding, cache, _ = self.chunks[chunk_index]
        inputs = on_device(encoding, self.device)
        with context(chunk, encoding) if context is not None else contextlib.nullcontext():
            out = self.model(input_ids=inputs["input_ids"][:, -1:], attention_mask=inputs["attention_mask"],
                             position_ids=inputs["position_ids"][:, -1:], cache=cache, use_cache=True)
        cache.crop(-1)  # drop the step just added
        return out.logits[:, -1].float().cpu()

    def accuracy(self, context=None) -> float:
        """Accuracy over the three listed colours with ``context(batch_items, encoding)`` active."""
        logits = [self.last_logits(i, context).gather(1, self.chunks[i][3]) for i in range(len(self.chunks))]
        return accuracy(torch.cat(logits), self.items)


def distractors(chunk, encoding):
    texts = [item.text for item in chunk]
    first = iv.span_positions(encoding, texts, [item.distractor_spans[0] for item in chunk])
    return first | iv.span_positions(encoding, texts, [item.distractor_spans[1] for item in chunk])


def override(model, heads):
    """The repair: ``heads`` attend only to the two distractor colours at the last token."""
    def context(chunk, encoding):
        keys = distractors(chunk, encoding)
        return iv.override_attention(model, {head: keys for head in heads}, queries=iv.last_token(encoding["attention_mask"]))
    return context


def block_question(model, heads):
    def context(chunk, encoding):
        question = iv.span_positions(encoding, [item.text for item in chunk], [item.question_span for item in chunk])
        return iv.block_keys(model, heads, keys=question, queries=iv.last_token(encoding["attention_mask"]))
    return context


# -- where the repair acts: the path through the downstream heads cut, or kept alone ------------------------
def downstream_of(heads, num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """Every head in a layer after the first repaired head's layer, the repaired heads excepted: the heads that
    can read what a repaired head writes at the last token (a head in the same layer cannot)."""
    first = min(layer for layer, _ in heads)
    return [(layer, head) for layer in range(first + 1, num_layers) for head in range(num_heads) if (layer, head) not in heads]


def record_heads(model, encoding) -> iv.HeadActivations:
    """Every head's output at every position of one full forward of ``encoding`` (under whatever edits are active)."""
    return iv.cache_heads(model, **on_device(encoding, next(model.parameters()).device))


def frozen(model, downstream, source):
    """``downstream`` heads' last-token outputs patched to ``source``'s (a HeadActivations of the same batch)."""
    return iv.patch(model, dict.fromkeys(downstream, source), positions=iv.last_token(source.attention_mask))


def direct_path_only(model, heads, downstream):
    """The repair with every downstream head frozen at its output from the unrepaired run: the repaired heads reach
    the logits only through the residual stream (and the downstream MLPs, which no tool here freezes)."""
    @contextlib.contextmanager
    def context(chunk, encoding):
        bare = record_heads(model, encoding)
        with override(model, heads)(chunk, encoding), frozen(model, downstream, bare):
            yield
    return context


def downstream_path_only(model, heads, downstream):
    """The converse: no repair, but every downstream head given its output from the repaired run, so the repair
    reaches the logits only through the downstream heads."""
    @contextlib.contextmanager
    def context(chunk, encoding):
        with override(model, heads)(chunk, encoding):
            repaired = record_heads(model, encoding)
        with frozen(model, downstream, repaired):
            yield
    return context


def surviving(part: float | None, bare: float, repaired: float) -> float | None:
    """The share of the repair's gain over the bare model that ``part`` keeps (None without a gain)."""
    gain = repaired - bare
    return None if part is None or gain <= 1e-9 else (part - bare) / gain


# -- the head search, the same for the patching candidates and for random pools ----------------------------------
def greedy_search(runs: LastTokenRuns, model, pool, max_heads: int, base: float | None = None
                  ) -> tuple[list[tuple[int, int]], float, float]:
    """``(heads, accuracy, bare accuracy)`` on ``runs``: the pool ranked by each head's own gain, then heads added in
    that order while the override of all of them together helps, up to ``max_heads`` (``base``: the bare accuracy
    on ``runs``, when known)."""
    base = runs.accuracy() if base is None else base
    gains = {head: runs.accuracy(override(model, [head])) - base for head in pool}
    heads: list = []
    best = base
    for head in sorted(pool, key=lambda h: -gains[h]):
        if len(heads) == max_heads:
            break
        trial = runs.accuracy(override(model, heads + [head]))
        if trial > best:
            heads, best = heads + [head], trial
    return heads, best, base


def random_pool(rng: random.Random, candidates, every_head) -> list[tuple[int, int]]:
    """As many heads as ``candidates``, none of them, from the same layers (as many per layer where the layer has
    enough other heads; any shortfall from the other heads between the candidates' first and last layer)."""
    taken = set(candidates)
    per_layer = collections.Counter(layer for layer, _ in candidates)
    pool: list = []
    for layer in sorted(per_layer):
        free = [h for h in every_head if h[0] == layer and h not in taken]
        picked = rng.sample(free, min(per_layer[layer], len(free)))
        pool += picked
        taken.update(picked)
    short = len(candidates) - len(pool)
    if short:
        low, high = min(per_layer), max(per_layer)
        free = [h for h in every_head if low <= h[0] <= high and h not in taken] or [h for h in every_head if h not in taken]
        pool += rng.sample(free, min(short, len(free)))
    return pool


@torch.no_grad()
def patching_effects(model, tokenizer, items: list[Item], ids) -> torch.Tensor:
    """(L, H): how much patching each head's last-token output from the corrupted prompt (which asks about
    another object) moves the logit difference (answer - the other object's colour), as a share of the
    clean-to-corrupted difference."""
    runs = LastTokenRuns(model, tokenizer, items, ids, batch_size=len(items))
    _, encoding, _, _ = runs.chunks[0]
    corrupted = encode(tokenizer, [item.corrupted for item in items])
    if encoding["input_ids"].shape != corrupted["input_ids"].shape or not torch.equal(encoding["attention_mask"], corrupted["attention_mask"]):
        raise RuntimeError("clean and corrupted prompts must tokenise to the same layout")
    answer = torch.tensor([ids[item.colours[item.answer]] for item in items])
    other = torch.tensor([ids[item.colours[item.other]] for item in items])
    rows = torch.arange(len(items))

    def difference(logits):  # (B, V) last-token logits
        return (logits[rows, answer] - logits[rows, other]).mean()

    clean = difference(runs.last_logits(0))
    source = iv.cache_heads(model, **on_device(corrupted, runs.device))
    corrupt = difference(source.logits[:, -1].float().cpu())
    sites = headwise.find_head_sites(model)
    effects = torch.zeros(len(sites), sites[0].num_heads)
    for layer in range(len(sites)):
        for head in range(sites[0].num_heads):
            patch = lambda chunk, enc, key=(layer, head): iv.patch(model, {key: source}, positions=iv.last_token(enc["attention_mask"]))  # noqa: E731
            effects[layer, head] = (clean - difference(runs.last_logits(0, patch))) / (clean - corrupt)
    return effects


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help(QUICK))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--items", type=int, default=240, help="items per seed: a third to choose heads, the rest to test")
    parser.add_argument("--patch-items", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=12, help="the pool the greedy search runs over (and each random pool's size)")
    parser.add_argument("--max-heads", type=int, default=4)
    parser.add_argument("--random-pools", type=int, default=5,
                        help="random pools per seed, each given the same greedy search as the patching candidates (0: none)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--out", type=Path, default=PLOTS, help="where the plot goes (default benchmarks/plots)")
    add_model_arguments(parser, batch_size=24)
    return apply_quick(parser.parse_args(argv), QUICK, argv)


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv=None) -> None:
    args = arguments(argv)
    disable_progress_bars()
    model, tokenizer = load_model(args)
    ids = colour_ids(tokenizer)
    sites = headwise.find_head_sites(model)
    num_layers, num_heads = len(sites), sites[0].num_heads
    every_head = [(layer, head) for layer in range(num_layers) for head in range(num_heads)]
    table: dict[str, list[float]] = {}
    chosen: dict[int, dict] = {}
    downstream_figures: dict[int, dict] = {}
    pool_figures: dict[int, list[dict]] = {}
    search_figures: dict[int, dict] = {}
    manifests: dict[int, dict] = {}
    seconds: dict[int, dict] = {}
    effect_maps = []

    def record(name, value):
        table.setdefault(name, []).append(value)

    for seed in args.seeds:
        clock = {"start": time.perf_counter()}
        select, test, manifests[seed] = split_items(
            args.items, seed, tokens_of=lambda word: len(tokenizer(" " + word, add_special_tokens=False).input_ids))
        effects = patching_effects(model, tokenizer, select[: args.patch_items], ids)
        effect_maps.append(effects)
        clock["patching"] = time.perf_counter()
        candidates = [every_head[i] for i in effects.flatten().abs().argsort(descending=True)[: args.candidates].tolist()]
        select_runs = LastTokenRuns(model, tokenizer, select, ids, args.batch_size)
        test_runs = LastTokenRuns(model, tokenizer, test, ids, args.batch_size)
        heads, best, base_select = greedy_search(select_runs, model, candidates, args.max_heads)
        clock["search"] = time.perf_counter()

        bare = test_runs.accuracy()
        repaired = test_runs.accuracy(override(model, heads)) if heads else bare
        record("bare model", bare)
        record("override chosen heads onto the distractors", repaired)

        # (c) and (d): where the repair acts
        downstream = downstream_of(heads, num_layers, num_heads) if heads else []
        direct = downstream_only = None
        if heads and downstream:
            direct = test_runs.accuracy(direct_path_only(model, heads, downstream))
            downstream_only = test_runs.accuracy(downstream_path_only(model, heads, downstream))
        elif heads:  # the repaired heads sit in the last layer: no head can read them
            direct, downstream_only = repaired, bare
        if heads:
            record("repair, every downstream head frozen at its unrepaired output (direct path only)", direct)
            record("no repair, downstream heads given their repaired outputs (downstream path only)", downstream_only)
        downstream_figures[seed] = {
            "repaired_heads": heads, "downstream_heads": downstream, "bare": bare, "repair": repaired,
            "direct_path_only": direct, "downstream_path_only": downstream_only,
            "gain_surviving_direct": surviving(direct, bare, repaired),
            "gain_surviving_downstream": surviving(downstream_only, bare, repaired),
        }
        clock["downstream"] = time.perf_counter()

        # the control: the same greedy search over random pools of as many heads from the same layers
        pools = []
        for draw in range(args.random_pools):
            pool = random_pool(random.Random(f"circuit-reuse/{seed}/{draw}"), candidates, every_head)
            found, found_select, _ = greedy_search(select_runs, model, pool, args.max_heads, base_select)
            found_test = test_runs.accuracy(override(model, found)) if found else bare
            pools.append({"draw": draw, "pool": pool, "heads": found, "search_accuracy": found_select, "test_accuracy": found_test})
            record("override heads the same search finds in a random pool (same layers)", found_test)
        pool_figures[seed] = pools
        search_figures[seed] = {"bare": base_select, "chosen": best, "random_pools": [p["search_accuracy"] for p in pools]}
        clock["random_pools"] = time.perf_counter()

        rng = random.Random(seed)
        random_heads = rng.sample([h for h in every_head if h not in candidates], min(args.max_heads, len(every_head) - len(candidates)))
        top_patching = candidates[: args.max_heads]
        record("override random heads onto the distractors (no search)", test_runs.accuracy(override(model, random_heads)))
        record("block top patching heads from the question", test_runs.accuracy(block_question(model, top_patching)))
        record("block random heads from the question", test_runs.accuracy(block_question(model, random_heads)))
        clock["controls"] = time.perf_counter()
        chosen[seed] = {"override": heads, "top_patching": top_patching, "random": random_heads, "candidates": candidates}
        phases = list(clock)
        seconds[seed] = {b: round(clock[b] - clock[a], 1) for a, b in zip(phases, phases[1:])}
        print(f"seed {seed}: top patching heads {top_patching}; override heads {heads}; random {random_heads}; "
              f"random pools' heads {[p['heads'] for p in pools]}; seconds {seconds[seed]}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.out / "circuit_reuse_patching.png"
    iv.plot_attribution(torch.stack(effect_maps), plot, title="activation patching effect (mean over seeds)", top=args.max_heads)
    settings = (f"{model_note(args)}. " + seed_note(args.seeds) + f" {args.items} distinct one-shot items per seed (3 objects, "
                f"8 colours, 17 objects), split by the seed: a third (the search split) choose the heads (activation "
                f"patching from prompts asking about another object, {args.patch_items} items; then a greedy search: the "
                f"top {args.candidates} heads ranked by their own gain, added while the override of all of them helps, up to "
                f"{args.max_heads}), the rest (the test split) give every accuracy below; the split's manifest is in the JSON. "
                f"The control runs the identical search over {args.random_pools} random pools per seed of {args.candidates} "
                "other heads from the candidates' layers. Direct path only: the repair with every head in a layer after the "
                "first repaired head's layer frozen, at the last token, at its output from the unrepaired run (the downstream "
                "MLPs are not frozen); downstream path only: the converse (no repair, those heads given their outputs from "
                "the repaired run). Accuracy is the argmax over the three listed colours (chance 1/3). Left padding with an "
                f"attention mask (a tokenizer without a pad token pads with EOS). Plot: `{plot.name}`.")
    paper = {"bare model": "49.6%", "override chosen heads onto the distractors": "93.7%",
             "block top patching heads from the question": "~35%", "block random heads from the question": "49.9%"}
    rows = markdown_table(["setting", "accuracy", "paper (GPT2-Medium)"],
                          [[name, mean_spread(values, 3), paper.get(name, "-")] for name, values in table.items()])
    path_rows = markdown_table(
        ["seed", "repaired heads", "downstream heads frozen", "bare", "repair", "direct path only", "downstream path only",
         "gain kept, direct only", "gain kept, downstream only"],
        [[seed, f["repaired_heads"], len(f["downstream_heads"]), fmt(f["bare"]), fmt(f["repair"]), fmt(f["direct_path_only"]),
          fmt(f["downstream_path_only"]), fmt(f["gain_surviving_direct"], 2), fmt(f["gain_surviving_downstream"], 2)]
         for seed, f in downstream_figures.items()])
    kept = [f["gain_surviving_direct"] for f in downstream_figures.values() if f["gain_surviving_direct"] is not None]
    kept_downstream = [f["gain_surviving_downstream"] for f in downstream_figures.values() if f["gain_surviving_downstream"] is not None]
    all_pools = [p for pools in pool_figures.values() for p in pools]
    search_rows = [["activation-patching candidates", "1 per seed", mean_spread([s["chosen"] for s in search_figures.values()], 3),
                    mean_spread(table["override chosen heads onto the distractors"], 3),
                    mean_spread([len(c["override"]) for c in chosen.values()], 1)]]
    if all_pools:
        search_rows.append(["random pools, same layers", f"{args.random_pools} per seed", mean_spread([p["search_accuracy"] for p in all_pools], 3),
                            mean_spread([p["test_accuracy"] for p in all_pools], 3), mean_spread([len(p["heads"]) for p in all_pools], 1)])
    footer = ("Where the repair acts (test split; gain kept = (variant - bare) / (repair - bare)):\n\n" + path_rows + "\n\n"
              + (f"Gain kept with the downstream heads cut: {mean_spread(kept, 2)}; through the downstream heads alone: "
                 f"{mean_spread(kept_downstream, 2)}.\n\n" if kept else "")
              + f"The greedy search over {args.candidates}-head pools (search split: the search's best; test split: its heads "
                "on the test items):\n\n"
              + markdown_table(["pool", "draws", "search split", "test split", "heads kept"], search_rows))
    publish("Circuit reuse: Colored Objects", settings, rows, args, footer=footer, accuracy=table,
            heads={str(k): v for k, v in chosen.items()},
            downstream_path={str(k): v for k, v in downstream_figures.items()},
            random_pool_search={str(k): v for k, v in pool_figures.items()},
            search_split={str(k): v for k, v in search_figures.items()},
            splits={str(k): v for k, v in manifests.items()},
            seconds={str(k): v for k, v in seconds.items()})


if __name__ == "__main__":
    main()
