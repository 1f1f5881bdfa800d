"""benchmarks/common.ResultCache: a long benchmark run resumed task by task (--resume)."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import ResultCache  # noqa: E402


def settings(**changes):
    values = dict(tasks=["antonym"], seeds=[0], steps=20, lrs=[0.2, 0.6], json=None, resume=None)
    values.update(changes)
    return argparse.Namespace(**values)


def test_results_are_kept_and_not_computed_again(tmp_path):
    path = tmp_path / "run.jsonl"
    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return {"scores": ([1.0, 0.0], [0.0, 0.0]), "choice": {"lr": value}}
        return run

    first = ResultCache(path, settings())
    fresh = first.run("antonym", 0, compute(0.2))
    assert fresh == {"scores": [[1.0, 0.0], [0.0, 0.0]], "choice": {"lr": 0.2}}  # through JSON, as a resumed one
    # a later session: more seeds and tasks, the same settings otherwise
    again = ResultCache(path, settings(seeds=[0, 1], tasks=["antonym", "country-capital"], json=Path("x.json")))
    assert again.run("antonym", 0, compute(99)) == fresh
    assert again.run("antonym", 1, compute(0.6))["choice"]["lr"] == 0.6
    assert calls == [0.2, 0.6]
    assert len(path.read_text().splitlines()) == 3  # the settings line and two results
    assert first.time_note(3.2) == "3 min"
    assert again.time_note(5) == ("5 min for 1 of 2 task-seed results (the others read back from --resume's file, "
                                  "computed in earlier invocations)")
    read_back = ResultCache(path, settings())
    read_back.run("antonym", 0, compute(99))
    assert read_back.time_note(0) == "all 1 task-seed results read back from --resume's file (computed in earlier invocations)"


def test_other_settings_are_refused_with_the_flags_named(tmp_path):
    path = tmp_path / "run.jsonl"
    ResultCache(path, settings()).run("antonym", 0, lambda: {"a": 1})
    with pytest.raises(SystemExit, match=r"other settings \(lrs, steps\)"):
        ResultCache(path, settings(steps=30, lrs=[0.2]))


def test_a_file_that_is_no_results_file_is_refused(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text("not json\n")
    with pytest.raises(SystemExit, match="not a results file"):
        ResultCache(path, settings())


def test_without_a_file_nothing_is_written(tmp_path):
    cache = ResultCache(None, settings())
    assert cache.run("antonym", 0, lambda: {"a": (1, 2)}) == {"a": [1, 2]}
    assert not list(tmp_path.iterdir())


def test_which_results_are_wanted_may_change_but_not_how_they_are_made(tmp_path):
    path = tmp_path / "run.jsonl"
    ResultCache(path, settings(initial_tokens=["prompt", "bos"])).run("sst2 (prompt first)", 0, lambda: {"a": 1})
    fewer = ResultCache(path, settings(initial_tokens=["prompt"], seeds=[0, 1, 2], tasks=["sst2", "cb"]))
    assert fewer.run("sst2 (prompt first)", 0, lambda: {"a": 2}) == {"a": 1}
    with pytest.raises(SystemExit, match=r"other settings \(n_test\)"):
        ResultCache(path, settings(initial_tokens=["prompt"], n_test=48))
    older = tmp_path / "older.jsonl"  # a file whose settings line still names what is now ignored
    older.write_text(json.dumps({"settings": {"initial_tokens": ["prompt", "bos"], "lrs": [0.2, 0.6], "steps": 20}}) + "\n")
    ResultCache(older, settings(initial_tokens=["prompt"]))
