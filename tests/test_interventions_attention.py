"""Attention override and key blocking against a reference attention function that edits the post-softmax
pattern (override) or the logits (blocking) directly, on eager and sdpa, with left padding, GQA and the KV cache."""

import sys

import pytest
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

import interventions as iv
from intervention_helpers import cached_logits, full_logits, left_padded
from tiny_models import ARCHS, hook_count, tiny_model

PLAN: dict = {}  # "override": {(layer, head): (B, T) pattern}, "block": {(layer, head): (B, T) keys}, "queries": (B, T)


def reference_attention(module, query, key, value, attention_mask, **kwargs):
    """The architecture's own eager attention with the edits written out on its scores / weights."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    layer, queries = module.layer_idx, PLAN["queries"]
    q_len, k_len = query.shape[2], key.shape[2]
    rows = queries[:, k_len - q_len:k_len]  # (B, Tq): full attention, the queries are the last q_len keys
    mask = attention_mask[..., :k_len].expand(query.shape[0], query.shape[1], q_len, k_len).clone()
    for (l, h), keys in PLAN.get("block", {}).items():
        if l == layer:
            blocked = rows[:, :, None] & keys[:, None, :k_len]
            mask[:, h] = mask[:, h].masked_fill(blocked, torch.finfo(mask.dtype).min)
    _, probs = eager(module, query, key, value, mask, **kwargs)
    for (l, h), pattern in PLAN.get("override", {}).items():
        if l == layer:
            weights = pattern[:, :k_len].float() / pattern[:, :k_len].float().sum(-1, keepdim=True)
            probs[:, h] = torch.where(rows[:, :, None], weights[:, None, :].to(probs.dtype), probs[:, h])
    groups = query.shape[1] // value.shape[1]
    out = probs.to(value.dtype) @ value.repeat_interleave(groups, dim=1)
    return out.transpose(1, 2).contiguous(), probs


AttentionInterface.register("interventions_reference", reference_attention)
AttentionMaskInterface.register("interventions_reference", eager_mask)

PAIRS = [(arch, impl) for arch in ARCHS for impl in ("eager", "sdpa") if (arch, impl) != ("gemma2", "sdpa")]


def setting(ids, mask):
    """Override head (1, 2) onto the first two real tokens and head (2, 1) with planted weights, at the last
    token; block head (0, 3) from each row's first real token at every later query."""
    first_two = iv.token_index(mask, [0, 1])
    weights = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) * mask
    queries = iv.last_token(mask)
    return {(1, 2): first_two, (2, 1): weights}, {(0, 3): iv.token_index(mask, 0)}, queries


def model_with(arch, implementation):
    model = tiny_model(arch)
    model.set_attn_implementation(implementation)
    return model


@pytest.mark.parametrize("arch, implementation", PAIRS)
def test_override_and_blocking_equal_the_reference_attention_with_left_padding(arch, implementation):
    ids, mask = left_padded()
    overrides, blocks, queries = setting(ids, mask)
    model = model_with(arch, implementation)
    bare = full_logits(model, ids, mask)
    with iv.override_attention(model, overrides, queries=queries):
        overridden = full_logits(model, ids, mask)
    every_later = mask.bool() & ~iv.token_index(mask, 0)
    with iv.block_keys(model, list(blocks), keys=blocks[(0, 3)], queries=every_later):
        blocked = full_logits(model, ids, mask)
    reference = model_with(arch, "interventions_reference")
    PLAN.clear(), PLAN.update(override=overrides, queries=queries)
    expected_override = full_logits(reference, ids, mask)
    PLAN.clear(), PLAN.update(block=blocks, queries=every_later)
    expected_block = full_logits(reference, ids, mask)
    real = mask.bool()
    assert (overridden[real] - expected_override[real]).abs().max() < 1e-5
    assert (blocked[real] - expected_block[real]).abs().max() < 1e-5
    assert (overridden[real] - bare[real]).abs().max() > 1e-3 and (blocked[real] - bare[real]).abs().max() > 1e-3
    assert torch.equal(full_logits(model, ids, mask), bare)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "opt", "gemma"])
def test_override_and_blocking_at_decoding_steps_read_the_cached_values(arch, implementation):
    """The overridden query is a decoding step: its pattern covers keys that live in the KV cache."""
    ids, mask = left_padded()
    overrides, blocks, _ = setting(ids, mask)
    queries = torch.zeros_like(mask, dtype=torch.bool)
    queries[:, -1] = True  # the last column, fed through the cache
    model = model_with(arch, implementation)
    reference = model_with(arch, "interventions_reference")
    with iv.override_attention(model, overrides, queries=queries):
        stepped = cached_logits(model, ids, mask, prefill=5)
    PLAN.clear(), PLAN.update(override=overrides, queries=queries)
    assert (stepped - full_logits(reference, ids, mask)[:, 4:]).abs().max() < 1e-5
    with iv.block_keys(model, list(blocks), keys=blocks[(0, 3)], queries=queries):
        stepped = cached_logits(model, ids, mask, prefill=5)
    PLAN.clear(), PLAN.update(block=blocks, queries=queries)
    assert (stepped - full_logits(reference, ids, mask)[:, 4:]).abs().max() < 1e-5


def test_gqa_heads_read_their_own_kv_head():
    """With 4 query heads over 2 KV heads, head 3 reads KV head 1: overriding it onto one key must give
    exactly that key's value from KV head 1 as the head's output."""
    ids, mask = left_padded()
    model = tiny_model("llama")
    key_index = iv.token_index(mask, 1)
    seen = {}
    attention = model.model.layers[1].self_attn
    handle = attention.v_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("v", out.detach()))
    cache = iv.cache_heads
    with iv.override_attention(model, {(1, 3): key_index}, queries=iv.last_token(mask)):
        acts = cache(model, ids, mask)
    handle.remove()
    values = seen["v"].unflatten(-1, (2, 8))  # (B, T, H_kv, d)
    rows = torch.arange(3)
    expected = values[rows, key_index.int().argmax(-1), 1]
    assert (acts[(1, 3)][:, -1] - expected).abs().max() < 1e-6


def test_bad_overrides_and_blocks_are_clear_errors_and_leave_no_hook():
    ids, mask = left_padded()
    model = tiny_model("llama")
    hooks = hook_count(model)
    last = iv.last_token(mask)
    future = torch.zeros_like(mask, dtype=torch.bool)
    future[:, -1] = True
    with pytest.raises(ValueError, match="causal"):
        with iv.override_attention(model, {(0, 0): future}, queries=iv.token_index(mask, 0)):
            full_logits(model, ids, mask)
    padding = ~mask.bool()
    padding[0, 0] = True  # row 0 has no padding: give it a real key, so rows 1 and 2 point at pads
    with pytest.raises(ValueError, match="padding key"):
        with iv.override_attention(model, {(0, 0): padding}, queries=last):
            full_logits(model, ids, mask)
    with pytest.raises(ValueError, match="select no key"):
        iv.uniform_pattern(torch.zeros_like(mask, dtype=torch.bool))
    with pytest.raises(IndexError):
        with iv.override_attention(model, {(0, 9): last}, queries=last):
            pass
    with pytest.raises(ValueError, match="attend to nothing"):
        with iv.block_keys(model, [(0, 0)], keys=mask.bool(), queries=last):
            full_logits(model, ids, mask)
    assert hook_count(model) == hooks
    with pytest.raises(ValueError, match="sdpa"):
        with iv.block_keys(model_with("llama", "interventions_reference"), [(0, 0)], keys=last):
            pass
