"""Task data from anywhere a user has it: files, rows, Datasets, Hub names, and reference tasks only where
the user points (``data_dir=`` / ``$HEADWISE_DATA``)."""

import json

import pytest
from datasets import Dataset, DatasetDict

from headwise.experiments import sources
from headwise.experiments.classification import load_classification
from headwise.experiments.data import FUNCTION_VECTORS_TASKS, load_word_pairs
from headwise.experiments.sources import DataSourceError, read_rows

ROWS = [{"input": f"w{i}", "output": f"w{i + 40}"} for i in range(20)]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv", "tsv"])
def test_every_file_format_gives_the_same_rows(tmp_path, suffix):
    if suffix == "json":
        path = write(tmp_path / "pairs.json", json.dumps(ROWS))
    elif suffix == "jsonl":
        path = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(r) for r in ROWS) + "\n")
    else:
        sep = "," if suffix == "csv" else "\t"
        path = write(tmp_path / f"pairs.{suffix}", f"input{sep}output\n" + "".join(f"{r['input']}{sep}{r['output']}\n" for r in ROWS))
    assert read_rows(path) == ROWS
    task = load_word_pairs(path, valid=2, test=3, seed=1)
    assert task.name == "pairs" and len(task.train) == 15
    assert sorted(task.train + task.valid + task.test, key=lambda r: int(r["input"][1:])) == ROWS


def test_rows_a_dataset_and_a_dataset_dict_give_the_same_split():
    expected = load_word_pairs(ROWS, valid=2, test=3, seed=4)
    assert load_word_pairs(Dataset.from_list(ROWS), valid=2, test=3, seed=4) == expected
    assert load_word_pairs(DatasetDict(train=Dataset.from_list(ROWS)), valid=2, test=3, seed=4) == expected


def test_a_hub_name_goes_to_datasets_load_dataset_as_is(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return Dataset.from_list([{"q": r["input"], "a": r["output"]} for r in ROWS])

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = load_word_pairs("someone/word-pairs", valid=0, test=5, input_column="q", output_column="a", split="validation")
    assert calls == [("someone/word-pairs", "validation")]
    assert len(task.test) == 5 and task.test[0].keys() == {"input", "output"}


def test_a_hub_failure_names_every_kind_of_source(monkeypatch):
    import datasets

    def offline(name, split):
        raise ConnectionError("Couldn't reach 'someone/x' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataSourceError, match="not a file.*Hub dataset failed.*ConnectionError.*JSON / JSONL / CSV"):
        read_rows("someone/x")


def test_a_reference_task_name_without_a_data_folder_says_what_to_pass(monkeypatch):
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    with pytest.raises(DataSourceError, match=r"antonym.*data_dir=FOLDER or set \$HEADWISE_DATA"):
        load_word_pairs("antonym")
    with pytest.raises(DataSourceError, match=r"data_dir=FOLDER or set \$HEADWISE_DATA"):
        load_classification("sst2")


def test_reference_tasks_resolve_through_data_dir_or_the_environment(monkeypatch, shared_data):
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    by_argument = load_word_pairs("antonym", seed=3, data_dir=shared_data)
    monkeypatch.setenv(sources.DATA_ENV, str(shared_data))
    assert load_word_pairs("antonym", seed=3) == by_argument
    assert load_classification("sst2", n_dev=4, n_test=4, data_dir=shared_data).label_words == ["negative", "positive"]


def test_the_shipped_task_names_match_the_reference_folder(shared_data):
    on_disk = {kind: sorted(p.stem for p in (shared_data / "function_vectors" / kind).glob("*.json"))
               for kind in ("abstractive", "extractive")}
    assert {kind: sorted(names) for kind, names in FUNCTION_VECTORS_TASKS.items()} == on_disk


def test_a_wrong_data_dir_and_an_unknown_task_are_named(tmp_path, shared_data):
    with pytest.raises(DataSourceError, match="is not a folder"):
        load_word_pairs("antonym", data_dir=tmp_path / "nowhere")
    with pytest.raises(DataSourceError, match="no Function Vectors task 'antonyms'.*known: .*antonym"):
        load_word_pairs("antonyms", data_dir=shared_data)


@pytest.mark.parametrize("content, message", [
    ("[{\"input\": 1", "not valid JSON"),
    ("{\"a\": 1}", "list of rows"),
])
def test_corrupt_files_are_named(tmp_path, content, message):
    with pytest.raises(DataSourceError, match=message):
        read_rows(write(tmp_path / "bad.json", content))


def test_missing_columns_name_the_option_that_fixes_them():
    with pytest.raises(DataSourceError, match="input_column= / output_column="):
        load_word_pairs([{"q": "a", "a": "b"}] * 3)


def test_your_own_classification_rows_take_a_template_and_label_words(tmp_path):
    path = write(tmp_path / "reviews.csv", "text,label\n" + "".join(f"w{i},{'yes' if i % 2 else 0}\n" for i in range(30)))
    task = load_classification(path, n_dev=5, n_test=10, seed=2, template="Review: {text}\nAnswer:", label_words=["no", "yes"])
    assert (len(task.train), len(task.dev), len(task.test)) == (15, 5, 10)
    assert all(row["label"] == (int(row["fields"]["text"][1:]) % 2) for row in task.train + task.dev + task.test)
    assert task.prompt(task.test[0]).startswith("Review: w")
    with pytest.raises(ValueError, match="template= .*label_words="):
        load_classification(path)
    with pytest.raises(ValueError, match="the template names 'review'"):
        load_classification(path, template="{review}", label_words=["no", "yes"])
    with pytest.raises(ValueError, match="label 'maybe'"):
        load_classification([{"text": "a", "label": "maybe"}], n_dev=0, n_test=0, template="{text}", label_words=["no", "yes"])
