"""Position selectors: real tokens read from the mask under left, right and no padding; multi-token spans."""

import pytest
import torch

import interventions as iv
from tiny_tokenizer import tiny_tokenizer

LEFT = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
RIGHT = LEFT.flip(-1)


def test_last_and_indexed_tokens_under_left_and_right_padding():
    assert iv.last_token(LEFT).nonzero().tolist() == [[0, 4], [1, 4], [2, 4]]
    assert iv.last_token(RIGHT).nonzero().tolist() == [[0, 2], [1, 4], [2, 0]]
    assert iv.token_index(LEFT, 0).nonzero().tolist() == [[0, 2], [1, 0], [2, 4]]
    assert iv.token_index(RIGHT, 1).nonzero().tolist() == [[0, 1], [1, 1]]  # row 2 has one token: skipped
    assert iv.token_index(LEFT, [0, -1]).sum(-1).tolist() == [2, 2, 1]
    assert torch.equal(iv.all_tokens(LEFT), LEFT.bool())


def test_token_occurrences_skip_padding():
    ids = torch.tensor([[7, 7, 5, 7], [3, 7, 9, 9]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]])
    assert iv.token_occurrences(ids, {7, 9}, mask).tolist() == [[False, True, False, True], [False, True, True, False]]
    with pytest.raises(ValueError, match="token_ids is empty"):
        iv.token_occurrences(ids, [])


@pytest.mark.parametrize("side", ["left", "right"])
def test_span_positions_take_every_token_of_a_multi_token_span(side):
    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = side
    texts = ["w1 w2 w3 w4", "w5 w6"]
    encoding = tokenizer(texts, padding=True, return_offsets_mapping=True, return_tensors="pt")
    chosen = iv.span_positions(encoding, texts, ["w2 w3", (3, 5)])
    picked = [encoding["input_ids"][row][chosen[row]].tolist() for row in range(2)]
    assert picked == [tokenizer.convert_tokens_to_ids(["w2", "w3"]), tokenizer.convert_tokens_to_ids(["w6"])]
    with pytest.raises(ValueError, match="offset_mapping"):
        iv.span_positions(tokenizer(texts, padding=True, return_tensors="pt"), texts, ["w2", "w6"])
    with pytest.raises(ValueError, match="does not occur"):
        iv.span_positions(encoding, texts, ["w9", "w6"])
