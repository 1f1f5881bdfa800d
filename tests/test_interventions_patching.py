"""Patching (zero, scale, mean, activation) against hand-written hooks on every architecture, with left
padding and through the KV cache; the model is unchanged after the block, even when it raises."""

import pytest
import torch

import interventions as iv
from intervention_helpers import cached_logits, full_logits, head_dim, left_padded, position_ids, reference_head_edit
from tiny_models import ARCHS, hook_count, tiny_model

def capture_heads(model, arch, ids, mask):
    """(L, B, T, H*d) pinned output-projection inputs, captured by hand."""
    seen = {}

    def edit(layer, x):
        seen[layer] = x.clone()
        return x

    with reference_head_edit(model, arch, edit):
        full_logits(model, ids, mask)
    return torch.stack([seen[layer] for layer in range(len(seen))])


def build(arch, ids, mask):
    """Our patch values and the reference edit for EDITS at each row's last real token."""
    model = tiny_model(arch)
    d = head_dim(arch)
    corrupted = ids.clone()
    corrupted[mask.bool()] = (ids[mask.bool()] * 7 + 3) % 90 + 4
    clean = capture_heads(model, arch, ids, mask)
    source = capture_heads(model, arch, corrupted, mask)
    real = mask.bool()
    mean = clean[2][real][:, 0:d].mean(0)  # head (2, 0) over every real token
    ours = {(0, 1): "zero", (1, 3): 0.25, (2, 0): mean, (2, 2): iv.cache_heads(model, corrupted, mask, position_ids=position_ids(mask))}
    last = iv.last_token(mask)

    def reference(layer, x):
        rows = last.nonzero().tolist()
        for b, t in rows:
            if layer == 0:
                x[b, t, 1 * d:2 * d] = 0
            if layer == 1:
                x[b, t, 3 * d:4 * d] *= 0.25
            if layer == 2:
                x[b, t, 0:d] = mean
                x[b, t, 2 * d:3 * d] = source[2, b, t, 2 * d:3 * d]
        return x

    return model, ours, last, reference


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_equals_a_hand_written_hook_with_left_padding(arch):
    ids, mask = left_padded()
    model, ours, last, reference = build(arch, ids, mask)
    bare = full_logits(model, ids, mask)
    with iv.patch(model, ours, positions=last):
        patched = full_logits(model, ids, mask)
    with reference_head_edit(model, arch, reference):
        expected = full_logits(model, ids, mask)
    real = mask.bool()
    assert (patched[real] - expected[real]).abs().max() < 1e-5
    assert (patched[real] - bare[real]).abs().max() > 1e-3
    assert torch.equal(full_logits(model, ids, mask), bare)  # the block left nothing behind


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "opt", "gemma"])
def test_patching_through_the_kv_cache_matches_the_full_forward(arch):
    """Positions that fall in decoding steps are patched there; positions in the prompt only in the prefill."""
    ids, mask = left_padded()
    model = tiny_model(arch)
    d = head_dim(arch)
    positions = torch.zeros_like(mask, dtype=torch.bool)
    positions[:, 3] = True  # in the prefill (of 5 columns)
    positions[:, 6] = True  # a decoding step
    positions &= mask.bool()
    with iv.patch(model, {(1, 2): "zero", (2, 3): 3.0}, positions=positions):
        stepped = cached_logits(model, ids, mask, prefill=5)

    def reference(layer, x):
        for b, t in positions.nonzero().tolist():
            if layer == 1:
                x[b, t, 2 * d:3 * d] = 0
            if layer == 2:
                x[b, t, 3 * d:4 * d] *= 3.0
        return x

    with reference_head_edit(model, arch, reference):
        expected = full_logits(model, ids, mask)[:, 4:]
    assert (stepped - expected).abs().max() < 1e-5


def test_mean_heads_is_the_mean_over_the_selected_positions():
    ids, mask = left_padded()
    model = tiny_model("llama")
    clean = capture_heads(model, "llama", ids, mask)  # (L, B, T, H*d)
    batches = [{"input_ids": ids[:2], "attention_mask": mask[:2]}, {"input_ids": ids[2:], "attention_mask": mask[2:]}]
    means = iv.mean_heads(model, batches)
    expected = clean[:, mask.bool()].mean(1).unflatten(-1, (4, 8))
    assert means.shape == (3, 4, 8) and (means - expected).abs().max() < 1e-5
    last = iv.mean_heads(model, batches, positions=iv.last_token)
    assert (last - clean[:, iv.last_token(mask)].mean(1).unflatten(-1, (4, 8))).abs().max() < 1e-5


def test_bad_patches_fail_before_any_hook_and_a_raising_block_leaves_no_hook():
    model = tiny_model("llama")
    ids, mask = left_padded()
    hooks = hook_count(model)
    for edits, error in [
        ({(3, 0): "zero"}, IndexError),
        ({(0, 4): "zero"}, IndexError),
        ({(0, 1): "mean"}, ValueError),
        ({(0, 1): torch.zeros(5)}, ValueError),
        ({(0, 1): [1.0]}, TypeError),
        ({}, ValueError),
    ]:
        with pytest.raises(error):
            with iv.patch(model, edits):
                pass
        assert hook_count(model) == hooks
    with pytest.raises(ValueError, match="bool tensor"):
        with iv.patch(model, {(0, 1): "zero"}, positions=[3]):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with iv.patch(model, {(0, 1): "zero"}):
            assert hook_count(model) > hooks
            raise RuntimeError("boom")
    assert hook_count(model) == hooks


def test_patching_keeps_gradients_flowing_to_the_model():
    model = tiny_model("llama")
    ids, mask = left_padded()
    with iv.patch(model, {(1, 0): 0.5}, positions=iv.last_token(mask)):
        loss = model(input_ids=ids, attention_mask=mask).logits[mask.bool()].square().mean()
        loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_patching_a_bf16_model_and_a_wrapped_model():
    """The patch casts back to the model's dtype, and it acts after an attached adapter's edit (it wins)."""
    import headwise
    from lofit import LofitConfig

    ids, mask = left_padded()
    last = iv.last_token(mask)
    model = tiny_model("llama").to(torch.bfloat16)

    def reference(layer, x):
        if layer == 1:
            x[last] = x[last].index_fill(-1, torch.arange(16, 24), 0)
        return x

    with iv.patch(model, {(1, 2): "zero"}, positions=last):
        ours = full_logits(model, ids, mask)
    with reference_head_edit(model, "llama", reference):
        expected = full_logits(model, ids, mask)
    assert ours.dtype == torch.bfloat16 and torch.equal(ours[mask.bool()], expected[mask.bool()])

    wrapped = headwise.wrap(tiny_model("llama"), LofitConfig(heads=[(1, 2), (1, 3)], init_weights=False))
    with iv.patch(wrapped, {(1, 2): "zero", (1, 3): "zero"}):
        patched = full_logits(wrapped, ids, mask)
    bare = tiny_model("llama")
    with iv.patch(bare, {(1, 2): "zero", (1, 3): "zero"}):
        expected = full_logits(bare, ids, mask)
    real = mask.bool()
    assert (patched[real] - expected[real]).abs().max() < 1e-5  # LoFiT's only heads were overwritten
