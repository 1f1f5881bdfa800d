"""AttentionCall: the mask facts shared by the layers of one forward pass are computed once, and never reused
for another mask (a new mask at the same address, an in-place edit, a freed mask)."""

import gc
import threading
import weakref

import pytest
import torch

import headwise
import zerotuning.adapter as zerotuning_adapter
from headwise import calls
from headwise.calls import AttentionCall
from soft_injection import inject
from zerotuning import ZeroTuningConfig
from tiny_models import tiny_model


def call_with(mask, batch=2, length=4, past=0):
    return AttentionCall(0, torch.zeros(batch, length, 8), mask, past)


def padded_mask(pads):
    """(B, 1, T, T) bool causal mask with ``pads[b]`` left pads in row b."""
    length = 5
    causal = torch.ones(length, length).tril().bool()
    real = torch.stack([torch.arange(length) >= pad for pad in pads])
    return causal[None, None] & real[:, None, None, :]


def test_a_fact_is_computed_once_per_mask_and_again_for_a_new_mask():
    mask = padded_mask([0, 2])
    counts = []
    first = call_with(mask, length=5).shared("probe", lambda: counts.append(1) or len(counts))
    again = AttentionCall(7, torch.zeros(2, 5, 8), mask, 0).shared("probe", lambda: counts.append(1) or len(counts))
    assert first == again == 1 and len(counts) == 1  # another layer, same mask: stored
    other = padded_mask([0, 2])  # equal values, another tensor
    assert call_with(other, length=5).shared("probe", lambda: counts.append(1) or len(counts)) == 2


def test_an_edited_mask_is_not_served_from_the_store_and_the_facts_go_with_their_mask():
    mask = padded_mask([0, 0])
    assert call_with(mask, length=5).real_keys().all()
    mask[1, :, :, :3] = False  # in place: row 1 now has three pads
    assert call_with(mask, length=5).real_keys()[1].tolist() == [False, False, False, True, True]
    facts = weakref.ref(call_with(mask, length=5).shared("probe", lambda: torch.zeros(1)))  # kept on the mask, nowhere else
    del mask
    gc.collect()
    assert facts() is None


def test_two_threads_with_masks_of_their_own_never_see_each_others_facts():
    masks = [padded_mask([0, 3]), padded_mask([2, 0])]
    seen = {}

    def work(index):
        for _ in range(200):
            seen.setdefault(index, set()).add(tuple(call_with(masks[index], length=5).real_keys()[:, 0].tolist()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {0: {(True, False)}, 1: {(False, True)}}


def test_inference_mode_masks_work():
    with torch.inference_mode():
        mask = padded_mask([1, 0])
        allowed, additive = call_with(mask, length=5).masks(torch.float16)
    assert additive.dtype == torch.float16 and torch.isfinite(additive).all()
    assert (additive[~allowed] == torch.finfo(torch.float16).min).all()


def test_without_a_mask_the_causal_facts_follow_the_cached_length():
    allowed, additive = call_with(None, batch=3, length=2, past=4).masks()
    assert allowed.shape == (3, 1, 2, 6)
    assert allowed[0, 0].tolist() == [[True] * 5 + [False], [True] * 6]
    assert (additive[~allowed] == torch.finfo(torch.float32).min).all() and (additive[allowed] == 0).all()


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_zerotuning_builds_its_initial_key_mask_once_per_forward_pass(monkeypatch, implementation):
    model = tiny_model("llama")
    model.set_attn_implementation(implementation)
    model = headwise.wrap(model, ZeroTuningConfig(heads="all", gamma=2.0))
    built = []
    original = zerotuning_adapter.initial_key_mask
    monkeypatch.setattr(zerotuning_adapter, "initial_key_mask", lambda *a: built.append(1) or original(*a))
    ids = torch.tensor([[0, 0, 5, 17, 33], [9, 23, 4, 8, 41]])
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=torch.tensor([[0, 0, 1, 1, 1], [1] * 5])).logits
        assert len(built) == 1  # three layers, one mask
        # the same shapes with the padding moved: a fresh mask, fresh facts, the model's own answer
        second = model(input_ids=ids, attention_mask=torch.tensor([[1] * 5, [0, 1, 1, 1, 1]])).logits
        assert len(built) == 2
        alone = model(input_ids=ids, attention_mask=torch.tensor([[1] * 5, [0, 1, 1, 1, 1]])).logits
    assert torch.equal(second, alone) and not torch.allclose(first, second)


def test_soft_injection_leaves_decoding_steps_alone_without_touching_the_heads():
    model = tiny_model("llama")
    sites = headwise.find_head_sites(model)
    model = inject(model, torch.randn(len(sites), sites[0].num_heads, sites[0].head_dim))
    edits = []
    for module in model.modules():
        if hasattr(module, "soft_injection_theta"):
            original = module.edit_heads
            module.edit_heads = lambda heads, name, call, original=original: edits.append(1) or original(heads, name, call)
    ids = torch.tensor([[5, 17, 33, 8]])
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).cache
        assert len(edits) == len(sites)  # the prefill: every layer
        model(input_ids=torch.tensor([[9]]), cache=cache, use_cache=True)
    assert len(edits) == len(sites)  # the decoding step: none
