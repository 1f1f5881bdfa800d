"""merge_and_unload folds LoFiT exactly into the output projection; the result reloads as a plain checkpoint."""

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

import headwise
from lofit import LofitConfig
from tiny_models import ARCHS, VOCAB, hook_count, randomize_adapter, tiny_model

IDS = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(9))
HEADS = [(0, 1), (1, 0), (1, 3)]  # layer 2 is not adapted: its projection still gains a zero bias
SAVABLE = {"llama", "qwen3", "gemma", "gemma2", "gpt2", "gpt_neox", "opt"}  # the others lack a bias flag


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_merge_and_unload_equals_the_hooked_model_and_reloads_as_plain_checkpoint(arch, tmp_path, caplog):
    model = headwise.wrap(tiny_model(arch), LofitConfig(heads=HEADS, use_scale=True))
    randomize_adapter(model)
    hooked = logits(model)
    with caplog.at_level(logging.WARNING, logger="headwise"):
        merged = model.merge_and_unload()
    assert hook_count(merged) == 0 and not hasattr(merged, "peft_config")
    assert (logits(merged) - hooked).abs().max() < 1e-5

    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    if arch in SAVABLE:
        assert (logits(reloaded) - hooked).abs().max() < 1e-5
        assert "loses the offsets" not in caplog.text
    else:
        assert "loses the offsets" in caplog.text  # said out loud, and true:
        assert (logits(reloaded) - hooked).abs().max() > 1e-3


def test_llama_merge_turns_on_attention_bias_with_zero_qkv_biases():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS))
    randomize_adapter(model)
    merged = model.merge_and_unload()
    assert merged.config.attention_bias is True
    attention = merged.model.layers[2].self_attn
    assert all(torch.equal(getattr(attention, n).bias, torch.zeros_like(getattr(attention, n).bias)) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert merged.model.layers[0].self_attn.o_proj.bias.abs().sum() > 0


def test_merge_adapter_and_unmerge_restore_the_weights():
    base = tiny_model("llama")
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = headwise.wrap(base, LofitConfig(heads=HEADS, use_scale=True))
    randomize_adapter(model)
    hooked = logits(model)
    model.merge_adapter()
    assert (logits(model) - hooked).abs().max() < 1e-5  # merged adapters are no longer applied by the hook
    model.unmerge_adapter()
    assert (logits(model) - hooked).abs().max() < 1e-5
    assert base.model.layers[0].self_attn.o_proj.bias is None
    restored = {k: v for k, v in base.state_dict().items() if k in original}
    assert all(torch.allclose(restored[k], v, atol=1e-6) for k, v in original.items())


def test_merge_onto_a_quantized_projection_is_a_clear_error_before_any_change():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS))
    o_proj = model.base_model.model.model.layers[1].self_attn.o_proj
    o_proj.weight = torch.nn.Parameter(o_proj.weight.data.to(torch.int8), requires_grad=False)  # stands in for 4-bit
    first = model.base_model.model.model.layers[0].self_attn.o_proj.weight.clone()
    with pytest.raises(TypeError, match="plain float weights"):
        model.merge_and_unload()
    assert torch.equal(model.base_model.model.model.layers[0].self_attn.o_proj.weight, first)
