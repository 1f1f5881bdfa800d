"""Batched generation with left padding: same tokens with and without the KV cache, and as each prompt alone."""

import pytest
import torch

import headwise
from lofit import LofitConfig
from tiny_models import ARCHS, randomize_adapter, tiny_model

PROMPTS = [[5, 17, 33, 8, 41, 12], [9, 23, 4], [30, 6, 19, 27]]


def left_padded(prompts, pad=0):
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def generate(model, ids, mask, use_cache):
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, use_cache=use_cache, pad_token_id=0
        )
    return out[:, ids.shape[1]:]


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_batch_matches_cache_off_and_single_prompts(arch):
    model = headwise.wrap(tiny_model(arch), LofitConfig(heads="all", use_scale=True))
    randomize_adapter(model, std=0.3)
    ids, mask = left_padded(PROMPTS)
    batched = generate(model, ids, mask, use_cache=True)
    assert torch.equal(batched, generate(model, ids, mask, use_cache=False))
    for row, prompt in enumerate(PROMPTS):
        alone = generate(model, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), use_cache=True)
        assert torch.equal(batched[row], alone[0]), f"prompt {row}"
    with torch.no_grad():  # not vacuous: the adapter changes the next-token distribution
        adapted = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        with model.disable_adapter():
            bare = model(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert (adapted - bare).abs().max() > 1e-2
