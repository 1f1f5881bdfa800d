"""docs/extending.md builds a fourth method (a per-head scalar gain) outside the method packages in 40
lines or fewer; here that very block runs, and the method trains, saves, reloads (headwise and PEFT),
merges exactly and unmerges exactly, a gain of 0 included."""

import peft
import pytest
import torch

import headwise
from doc_blocks import EXTENDING, extending_method, python_blocks
from tiny_models import tiny_model, train_on_ids

BLOCK = python_blocks(EXTENDING)[0]
HeadScaleConfig = extending_method()["HeadScaleConfig"]
IDS = torch.tensor([[3, 9, 17, 40, 5, 8, 11, 23]])
HEADS = [(0, 1), (2, 3), (2, 0)]


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_the_documented_method_is_40_lines_or_fewer_and_known_to_peft():
    assert len(BLOCK.strip().splitlines()) <= 40
    assert peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING["HEAD_SCALE"] is HeadScaleConfig


def reference(gains):
    """From scratch: each chosen head's slice of each o_proj input times its gain."""
    model = tiny_model("llama")
    handles = []
    for (layer, head), gain in zip(HEADS, gains):
        def hook(module, args, head=head, gain=gain):
            x = args[0].clone()
            x[..., head * 8:(head + 1) * 8] *= gain
            return (x,)
        handles.append(model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(hook))
    out = logits(model)
    for handle in handles:
        handle.remove()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_trains(seed):
    torch.manual_seed(seed)
    model = headwise.wrap(tiny_model("llama", seed=seed), HeadScaleConfig(heads=HEADS, init=0.5))
    assert headwise.trainable_parameters(model)["trainable"] == 3
    losses = train_on_ids(model, IDS, steps=15, lr=0.1)
    assert losses[-1] < losses[0]


def test_it_saves_reloads_merges_and_unmerges_exactly(tmp_path):
    model = headwise.wrap(tiny_model("llama"), HeadScaleConfig(heads=HEADS, init=0.5))
    gains = {(0, 1): 0.0, (2, 3): 2.5, (2, 0): -1.0}
    values = torch.ones(3, 4, 1)
    for (layer, head), gain in gains.items():
        values[layer, head] = gain
    model.base_model.write_heads("default", values, lambda holder, rows: holder.headscale_gain["default"].data.copy_(rows))
    expected = reference([gains[head] for head in HEADS])
    torch.testing.assert_close(logits(model), expected)
    model.save_pretrained(tmp_path)
    for load in (headwise.from_pretrained, peft.PeftModel.from_pretrained):
        torch.testing.assert_close(logits(load(tiny_model("llama"), str(tmp_path))), expected)
    bare = tiny_model("llama")
    weights = {k: v.clone() for k, v in bare.state_dict().items()}
    model = headwise.from_pretrained(bare, str(tmp_path))
    model.merge_adapter()  # gain 0 on one head: unmerge must restore, not divide
    torch.testing.assert_close(logits(model), expected)
    model.unmerge_adapter()
    assert all(torch.equal(bare.state_dict()[k], v) for k, v in weights.items())
    merged = model.merge_and_unload()
    assert not any(module._forward_pre_hooks for module in merged.modules())
    torch.testing.assert_close(logits(merged), expected)
