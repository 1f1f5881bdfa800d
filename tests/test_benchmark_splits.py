"""Every benchmark chooses on validation only: its train / validation / test sets are disjoint for every task and seed,
in the splits it draws and in the manifests of the committed runs; RESULTS.md is what the committed JSON gives."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import splits  # noqa: E402

SPLITTING = ["lofit_vs_peft", "soft_injection_vs_icl", "zerotuning_classification", "factual_recall"]


def manifests_of(module_name: str, argv: list[str]):
    module = importlib.import_module(module_name)
    args = module.arguments(argv)
    for task in args.tasks:
        for seed in args.seeds:
            drawn = module.task_splits(task, seed, args)
            if isinstance(drawn, tuple):  # (task, manifest)
                yield drawn[1]
            else:
                yield splits.manifest(task, seed, train=drawn.train, valid=drawn.valid, test=drawn.test)


@pytest.mark.parametrize("argv", [[], ["--quick"]], ids=["defaults", "quick"])
@pytest.mark.parametrize("module_name", SPLITTING)
def test_every_benchmark_draws_disjoint_train_validation_and_test_sets(module_name, argv, shared_data):
    found = list(manifests_of(module_name, argv))  # manifest() raises on any shared item
    assert found
    for record in found:
        assert all(size > 0 for size in record["sizes"].values()), record["sizes"]
        assert len(record["sizes"]) == 3


def test_seeds_draw_different_test_sets(shared_data):
    module = importlib.import_module("soft_injection_vs_icl")
    args = module.arguments(["--tasks", "antonym"])
    tests = {seed: {p["input"] for p in module.task_splits("antonym", seed, args).test} for seed in args.seeds}
    assert tests[0] != tests[1] != tests[2]


def committed_manifests(node):
    if isinstance(node, dict):
        if {"sha1", "items", "sizes"} <= set(node):
            yield node
        for value in node.values():
            yield from committed_manifests(value)
    elif isinstance(node, list):
        for value in node:
            yield from committed_manifests(value)


def test_the_committed_runs_manifests_are_disjoint():
    for path in sorted((BENCHMARKS / "results").glob("*.json")):
        for record in committed_manifests(json.loads(path.read_text())):
            splits.check_disjoint(record["items"], f"{path.name}: {record['task']}, seed {record['seed']}")


def test_check_disjoint_names_the_shared_item():
    with pytest.raises(ValueError, match="in both valid and test, e.g. 'cat'"):
        splits.check_disjoint({"train": ["a"], "valid": ["cat", "b"], "test": ["cat"]})
    with pytest.raises(ValueError, match="train and test"):
        splits.manifest("t", 0, train=[{"input": "x"}], test=[{"input": " x "}])


def test_demonstrations_are_drawn_per_query_and_never_the_query():
    pool = [{"input": f"w{i}", "output": "o"} for i in range(30)]
    first = splits.demonstrations(pool, 10, seed=0, query_index=0, exclude=pool[3])
    second = splits.demonstrations(pool, 10, seed=0, query_index=1, exclude=pool[3])
    assert first != second and len(first) == len(second) == 10
    assert pool[3] not in first + second
    assert first == splits.demonstrations(pool, 10, seed=0, query_index=0, exclude=pool[3])


def test_results_md_is_what_the_committed_json_gives():
    import report

    assert (BENCHMARKS / "RESULTS.md").read_text() == report.build(), "benchmarks/RESULTS.md is stale: run `make report`"


def test_paired_bootstrap_interval_holds_the_difference():
    from common import paired_bootstrap

    method = [[1, 1, 0, 1] * 10, [1, 0, 1, 1] * 10]
    baseline = [[0, 1, 0, 0] * 10, [1, 0, 0, 0] * 10]
    figure = paired_bootstrap(method, baseline)
    assert figure["difference"] == pytest.approx(0.5)
    assert figure["ci95"][0] < 0.5 < figure["ci95"][1] and figure["ci95"][0] > 0
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap([[1, 0]], [[1]])


def test_the_headline_names_the_tasks_a_run_chose():
    import report

    assert report.named_tasks("python b.py --tasks antonym 'country-capital' --seeds 0") == "antonym, country-capital"
    assert report.named_tasks("python b.py --seeds 0 --tasks antonym") == "antonym"
    assert report.named_tasks("python b.py --seeds 0") == ""


def test_runs_that_share_a_title_are_told_apart_by_the_flags_they_set():
    import report

    def run(command, title="Soft injection vs ICL"):
        return {"title": title, "command": command}

    loaded = [("main", run("python b.py --steps 20 --lrs 0.1 --json a.json")),
              ("budget", run("python b.py --tasks antonym --steps 40 --lrs 0.1 --resume x --json b.json")),
              ("other", run("python c.py --steps 40", title="LoFiT vs PEFT"))]
    assert report.titles(loaded) == {"main": "Soft injection vs ICL (--steps 20)",
                                     "budget": "Soft injection vs ICL (--steps 40)", "other": "LoFiT vs PEFT"}
