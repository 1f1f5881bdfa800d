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


def _bare_logits():
    return logits(tiny_model("llama"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_merge_after_the_wrapped_model_is_cast_to_low_precision(dtype):
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS, use_scale=True))
    randomize_adapter(model, std=0.2)
    reference = logits(model)  # fp32
    model = model.to(dtype)  # PEFT casts the adapter parameters too
    merged = model.merge_and_unload()
    assert merged.model.layers[0].self_attn.o_proj.weight.dtype == dtype
    torch.testing.assert_close(logits(merged).float(), reference, atol=0.1, rtol=0.05)


def test_a_named_adapter_is_merged_whether_active_or_not():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS), adapter_name="a")
    model.add_adapter("b", LofitConfig(heads=[(2, 2), (0, 1)]))
    randomize_adapter(model)
    model.set_adapter("b")
    only_b = logits(model)
    model.set_adapter("a")  # "b" is not active now
    merged = model.merge_and_unload(adapter_names=["b"])
    torch.testing.assert_close(logits(merged), only_b, atol=1e-5, rtol=1e-5)


def test_merge_adapter_with_a_named_inactive_adapter_then_unmerge():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS), adapter_name="a")
    model.add_adapter("b", LofitConfig(heads=[(1, 1)]))
    randomize_adapter(model)
    model.set_adapter("b")
    only_b = logits(model)
    model.set_adapter("a")
    bare = _bare_logits()
    with model.disable_adapter():
        model.merge_adapter(adapter_names=["b"])
        torch.testing.assert_close(logits(model), only_b, atol=1e-5, rtol=1e-5)
        model.unmerge_adapter()
        torch.testing.assert_close(logits(model), bare, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no adapter named 'c'"):
        model.merge_adapter(adapter_names=["c"])


def test_safe_merge_checks_every_layer_before_folding_any():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS), adapter_name="broken")
    randomize_adapter(model)
    with torch.no_grad():
        model.base_model.model.model.layers[1].self_attn.headwise_lofit.lofit_offset["broken"][0, 3] = float("nan")
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "o_proj" in n}
    for call in (lambda: model.merge_and_unload(safe_merge=True), lambda: model.merge_adapter(safe_merge=True)):
        with pytest.raises(ValueError, match=r"adapter 'broken'.*layer 1"):
            call()
        assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if "o_proj" in n)
        assert all(p.bias is None for n, p in model.named_modules() if n.endswith("o_proj"))
        assert hasattr(model, "peft_config")


def test_unload_after_merge_adapter_gives_back_the_base_model(tmp_path):
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS, use_scale=True))
    randomize_adapter(model)
    model.merge_adapter()
    base = model.unload()
    torch.testing.assert_close(logits(base), _bare_logits(), atol=1e-5, rtol=1e-5)
    assert base.model.layers[0].self_attn.o_proj.bias is None and not base.config.attention_bias
    base.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    torch.testing.assert_close(logits(reloaded), _bare_logits(), atol=1e-5, rtol=1e-5)
