"""Per-seed train / validation / test splits with a manifest, so every choice can be shown to use validation only.

A benchmark draws its splits here, records ``manifest(...)`` in its JSON, and makes every choice (learning
rate, epoch, recipe, gamma) on ``valid``; ``tests/test_benchmark_splits.py`` checks that the sets are disjoint
for every benchmark, task and seed.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Sequence

from headwise.experiments.data import WordPairTask, load_word_pairs

SPLITS = ("train", "valid", "test")


def item_key(item: dict) -> str:
    """What makes two items the same item: a word pair's input; a classification row's rendered fields."""
    if "input" in item:
        return str(item["input"]).strip()
    return json.dumps(item.get("fields", item), sort_keys=True, default=str)


def word_pair_splits(task: str, seed: int, n_train: int | None, n_valid: int, n_test: int) -> WordPairTask:
    """``task``'s pairs drawn by ``seed``: ``n_valid`` validation and ``n_test`` test items, and at most ``n_train``
    training items from the rest (all of it for None). Inputs are unique (``load_word_pairs`` drops repeats)."""
    pairs = load_word_pairs(task, valid=n_valid, test=n_test, seed=seed)
    train = pairs.train if n_train is None else pairs.train[:n_train]
    return WordPairTask(pairs.name, train, pairs.valid, pairs.test)


def manifest(task: str, seed: int, **splits: Sequence[dict]) -> dict:
    """The JSON record of one task's splits at one seed: sizes, a digest per split and the item keys; raises if
    two splits share an item (checked where the splits are drawn, not only in the test)."""
    keys = {name: [item_key(item) for item in items] for name, items in splits.items()}
    check_disjoint(keys, f"{task}, seed {seed}")
    digest = {name: hashlib.sha1("\n".join(sorted(k)).encode()).hexdigest()[:12] for name, k in keys.items()}
    return {"task": task, "seed": seed, "sizes": {n: len(k) for n, k in keys.items()}, "sha1": digest, "items": keys}


def check_disjoint(keys: dict[str, Sequence[str]], what: str = "splits") -> None:
    """Raise ``ValueError`` naming the first item that sits in two splits."""
    names = list(keys)
    for i, first in enumerate(names):
        seen = set(keys[first])
        for second in names[i + 1:]:
            shared = seen.intersection(keys[second])
            if shared:
                raise ValueError(f"{what}: {len(shared)} item(s) in both {first} and {second}, e.g. {sorted(shared)[0]!r}")


def demonstrations(pool: Sequence[dict], k: int, seed: int, query_index: int, exclude: dict | None = None) -> list[dict]:
    """``k`` demonstrations for one query, drawn afresh per query (seeded by the run's seed and the query) from
    ``pool`` (the training split), never the query itself."""
    rng = random.Random(f"{seed}/{query_index}")
    candidates = [item for item in pool if exclude is None or item_key(item) != item_key(exclude)]
    return rng.sample(candidates, min(k, len(candidates)))
