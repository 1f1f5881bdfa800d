"""headwise.experiments.classification on the reference data: disjoint splits, stable test items, prompts, demonstrations."""

import pytest

from headwise.experiments.classification import CLASSIFICATION_TASKS, load_classification


@pytest.fixture(scope="module", autouse=True)
def _needs_data(shared_data):
    return shared_data


def _key(row):
    return tuple(sorted(row["fields"].items()))


@pytest.mark.parametrize("name", CLASSIFICATION_TASKS)
def test_dev_never_overlaps_test_and_test_does_not_depend_on_the_dev_size(name):
    small, large = load_classification(name, n_dev=8, n_test=40), load_classification(name, n_dev=64, n_test=40)
    assert [_key(r) for r in small.test] == [_key(r) for r in large.test]
    assert len(small.dev) == 8 and len(large.dev) == 64 and len(small.test) == min(40, len(small.test))
    test_items = {_key(r) for r in large.test}
    assert not test_items & {_key(r) for r in large.dev}
    assert not test_items & {_key(r) for r in large.train} or name == "sst2"  # SST-2's files are its own splits
    labels = {r["label"] for r in large.dev + large.test}
    assert labels <= set(range(len(large.label_words)))


@pytest.mark.parametrize("name", CLASSIFICATION_TASKS)
def test_demonstrations_cycle_through_the_classes_and_end_with_the_query(name):
    task = load_classification(name, n_dev=4, n_test=4)
    classes = len(task.label_words)
    demos = task.demonstrations(2 * classes, seed=1)
    assert sorted(d["label"] for d in demos) == sorted(list(range(classes)) * 2)
    prompt = task.prompt(task.test[0], demos)
    blocks = prompt.split("\n\n")
    assert len(blocks) == 2 * classes + 1 and blocks[-1] == task.template.format(**task.test[0]["fields"])
    assert all(block.split(" ")[-1] in task.label_words for block in blocks[:-1])


def test_unknown_set_names_the_known_ones():
    with pytest.raises(ValueError, match="sst2"):
        load_classification("mnli")
