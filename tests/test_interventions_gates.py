"""The head-gate adapter against a hand-written hook on every architecture, with left padding, chosen
positions and the KV cache; it saves, reloads, trains when asked, and merges exactly (and unmerges even a 0 gate)."""

import peft
import pytest
import torch
from transformers import AutoModelForCausalLM

import headwise
import interventions as iv
from intervention_helpers import cached_logits, full_logits, head_dim, left_padded, reference_head_edit
from tiny_models import ARCHS, tiny_model, train_on_ids

HEADS = [(0, 1), (1, 3), (2, 0)]
SCALES = {(0, 1): 0.0, (1, 3): 0.4, (2, 0): 1.7}


def gated(arch, positions=None, baseline=None, **config):
    model = headwise.wrap(tiny_model(arch), iv.HeadGateConfig(heads=HEADS, positions=positions, **config))
    with torch.no_grad():
        for holder in model.modules():
            if isinstance(holder, iv.HeadGateLayer):
                for row, head in enumerate(holder.head_index["default"].tolist()):
                    holder.gate_scale["default"][row] = SCALES[(holder.site.layer, head)]
    if baseline is not None:
        iv.set_baseline(model, baseline)
    return model


def reference(arch, selected, baseline=None):
    """z <- a z + (1 - a) m at the (B, T) ``selected`` positions (None: all), by hand on the pinned module."""
    d = head_dim(arch)

    def edit(layer, x):
        for (l, h), a in SCALES.items():
            if l != layer:
                continue
            m = torch.zeros(d) if baseline is None else baseline[l, h]
            new = a * x[..., h * d:(h + 1) * d] + (1 - a) * m
            keep = torch.ones(x.shape[:2], dtype=torch.bool) if selected is None else selected
            x[..., h * d:(h + 1) * d] = torch.where(keep[..., None], new, x[..., h * d:(h + 1) * d])
        return x

    return edit


@pytest.mark.parametrize("arch", ARCHS)
def test_a_gate_at_every_position_and_at_the_last_token_equals_the_reference(arch):
    ids, mask = left_padded()
    baseline = torch.randn(3, 4, head_dim(arch), generator=torch.Generator().manual_seed(0))
    bare = tiny_model(arch)
    real = mask.bool()
    for positions, selected in [(None, None), ([-1], iv.last_token(mask)), ([0, 2], iv.token_index(mask, [0, 2]))]:
        ours = full_logits(gated(arch, positions, baseline), ids, mask)
        with reference_head_edit(bare, arch, reference(arch, selected, baseline)):
            expected = full_logits(bare, ids, mask)
        assert (ours[real] - expected[real]).abs().max() < 1e-5, positions


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "opt"])
def test_a_positional_gate_through_the_kv_cache_matches_the_full_forward(arch):
    ids, mask = left_padded()
    selected = iv.token_index(mask, [1, 5])  # index 5 is reached in a decoding step for rows 0 and 2
    stepped = cached_logits(gated(arch, [1, 5]), ids, mask, prefill=5)
    bare = tiny_model(arch)
    with reference_head_edit(bare, arch, reference(arch, selected)):
        expected = full_logits(bare, ids, mask)[:, 4:]
    assert (stepped - expected).abs().max() < 1e-5


def test_save_reload_and_the_config_round_trip(tmp_path):
    ids, mask = left_padded()
    baseline = torch.randn(3, 4, 8)
    model = gated("llama", [-1], baseline)
    expected = full_logits(model, ids, mask)
    model.save_pretrained(tmp_path)
    for load in (lambda b: headwise.from_pretrained(b, str(tmp_path)), lambda b: peft.PeftModel.from_pretrained(b, str(tmp_path))):
        reloaded = load(tiny_model("llama"))
        assert reloaded.peft_config["default"].positions == [-1]
        torch.testing.assert_close(full_logits(reloaded, ids, mask), expected)
    scales = iv.gate_scales(headwise.from_pretrained(tiny_model("llama"), str(tmp_path)))
    assert scales.shape == (3, 4) and scales[1, 3] == pytest.approx(0.4) and scales[0, 0] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_gates_stay_fixed_and_trainable_gates_train(seed):
    ids = torch.tensor([[3, 9, 17, 40, 5, 8, 11]])
    fixed = headwise.wrap(tiny_model("llama", seed=seed), iv.HeadGateConfig(heads=HEADS, scale=0.5))
    assert headwise.trainable_parameters(fixed)["trainable"] == 0
    model = headwise.wrap(tiny_model("llama", seed=seed), iv.HeadGateConfig(heads=HEADS, scale=1.0, trainable=True))
    assert headwise.trainable_parameters(model)["trainable"] == 3
    losses = train_on_ids(model, ids, steps=15)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_merging_is_exact_unmerging_restores_a_zero_gate_and_the_merged_model_reloads(arch, tmp_path):
    ids, mask = left_padded()
    real = mask.bool()
    bare = full_logits(tiny_model(arch), ids, mask)
    model = gated(arch, None, torch.randn(3, 4, head_dim(arch)))
    expected = full_logits(model, ids, mask)
    model.merge_adapter()
    torch.testing.assert_close(full_logits(model, ids, mask)[real], expected[real])
    model.unmerge_adapter()
    with model.disable_adapter():
        torch.testing.assert_close(full_logits(model, ids, mask)[real], bare[real])  # the 0-gated head is back
    merged = model.merge_and_unload()
    torch.testing.assert_close(full_logits(merged, ids, mask)[real], expected[real])
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    torch.testing.assert_close(full_logits(reloaded, ids, mask)[real], expected[real])


def test_a_positional_gate_refuses_to_merge_and_bad_configs_are_clear():
    model = gated("llama", [-1])
    with pytest.raises(TypeError, match="chosen positions"):
        model.merge_and_unload()
    with pytest.raises(ValueError, match="positions must be"):
        iv.HeadGateConfig(heads=HEADS, positions=[1.5])
    with pytest.raises(ValueError, match="scale must be"):
        iv.HeadGateConfig(heads=HEADS, scale="off")
    with pytest.raises(ValueError, match="head_dim"):
        iv.set_baseline(model, torch.zeros(3, 4, 5))
    with pytest.raises(TypeError, match="no head gate"):
        iv.gate_scales(tiny_model("llama"))
