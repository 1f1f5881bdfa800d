import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import headwise
from headwise.sites import UnsupportedArchitectureError, find_head_sites
from tiny_models import ARCHS, TINY_CONFIGS, tiny_model


@pytest.mark.parametrize("arch", ARCHS)
def test_every_table_architecture_resolves(arch):
    model = tiny_model(arch)
    sites = find_head_sites(model)
    assert arch in headwise.ARCHITECTURES
    assert len(sites) == 3
    names = dict(model.named_modules())
    for layer, site in enumerate(sites):
        assert site.layer == layer
        assert names[site.output_name] is site.output
        assert names[site.attention_name] is site.attention
        assert site.num_heads == 4
        assert site.num_heads * site.head_dim == site.output.weight.shape[0 if arch == "gpt2" else 1]
    expected_kv = TINY_CONFIGS[arch].get("num_key_value_heads", 4)
    assert sites[0].num_kv_heads == expected_kv


def test_head_dim_comes_from_the_projection_not_hidden_over_heads():
    sites = find_head_sites(tiny_model("gemma"))  # hidden 32, 4 heads, head_dim 16
    assert sites[0].head_dim == 16 and 32 // 4 == 8


def test_generic_fallback_finds_an_unlisted_llama_like_model():
    config = AutoConfig.for_model(
        "olmo", vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4
    )
    assert config.model_type not in headwise.ARCHITECTURES
    sites = find_head_sites(AutoModelForCausalLM.from_config(config))
    assert [s.output_name for s in sites] == ["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"]


def test_override_template_and_base_model_without_lm_head():
    model = tiny_model("llama")
    sites = find_head_sites(model.model, site_template="model.layers.{layer}.self_attn.o_proj")
    assert sites[1].output is model.model.layers[1].self_attn.o_proj


def test_unknown_architecture_error_names_model_type_and_override():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = torch.nn.Linear(8, 8)

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "oddformer", "num_hidden_layers": 2, "num_attention_heads": 2})()
            self.blocks = torch.nn.ModuleList([Block(), Block()])

    with pytest.raises(UnsupportedArchitectureError, match="oddformer.*site_template"):
        find_head_sites(Odd())
    sites = find_head_sites(Odd(), site_template="blocks.{layer}.mix")
    assert sites[0].head_dim == 4


def test_template_without_layer_placeholder_is_an_error():
    with pytest.raises(ValueError, match="layer"):
        find_head_sites(tiny_model("llama"), site_template="model.layers.0.self_attn.o_proj")
