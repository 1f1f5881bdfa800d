import pytest

from headwise.heads import group_by_layer, resolve_heads


def test_all_expands_and_layers_restrict():
    assert resolve_heads("all", 2, 2) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert resolve_heads("all", 3, 2, layers=[2]) == [(2, 0), (2, 1)]


def test_pairs_are_sorted_and_unique():
    assert resolve_heads([(1, 0), [0, 1], (1, 0)], 2, 2) == [(0, 1), (1, 0)]


@pytest.mark.parametrize(
    "heads, message", [([(2, 0)], r"layer 2 is out of range.*0\.\.1"), ([(0, 5)], r"head 5 is out of range.*0\.\.3")]
)
def test_out_of_range_names_the_valid_range(heads, message):
    with pytest.raises(IndexError, match=message):
        resolve_heads(heads, 2, 4)


def test_empty_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        resolve_heads([], 2, 4)


def test_group_by_layer():
    assert group_by_layer([(1, 3), (0, 2), (1, 0)]) == {0: [2], 1: [0, 3]}
