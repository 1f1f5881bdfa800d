"""AdapterConfig fields shared by every method: init_weights with PEFT's meaning."""

import pytest
import torch

import headwise
from lofit import LofitConfig
from soft_injection import SoftInjectionConfig, set_task_embedding
from tiny_models import tiny_model
from zerotuning import ZeroTuningConfig

IDS = torch.tensor([[5, 6, 7, 8]])


def change_from_bare(config, embedding=None) -> float:
    model = tiny_model("llama")
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        bare = model(input_ids=IDS).logits
    wrapped = headwise.wrap(model, config)
    if embedding is not None:
        set_task_embedding(wrapped, embedding)
    with torch.no_grad():
        return (wrapped(input_ids=IDS).logits - bare).abs().max().item()


@pytest.mark.parametrize("make", [lambda **k: LofitConfig(heads="all", use_scale=True, **k), lambda **k: ZeroTuningConfig(heads="all", **k)])
def test_init_weights_true_is_the_identity_and_false_is_random(make):
    assert change_from_bare(make(init_weights=True)) < 1e-2  # LoFiT: the paper's N(0, 1e-3) start
    assert change_from_bare(make(init_weights=False)) > 1e-2


def test_soft_injection_init_weights():
    # alpha = sigmoid(theta): theta 0 (alpha 0.5) with True, random with False; a zero embedding shows the difference
    zero = torch.zeros(3, 4, 8)
    first = headwise.wrap(tiny_model("llama"), SoftInjectionConfig(init_weights=True))
    assert all(torch.equal(p, torch.zeros_like(p)) for n, p in first.named_parameters() if "theta" in n)
    second = headwise.wrap(tiny_model("llama"), SoftInjectionConfig(init_weights=False))
    thetas = torch.cat([p.flatten() for n, p in second.named_parameters() if "theta" in n])
    assert thetas.std() > 0.5
    assert change_from_bare(SoftInjectionConfig(init_weights=False), zero) != change_from_bare(SoftInjectionConfig(), zero)


@pytest.mark.parametrize("config_cls", [LofitConfig, SoftInjectionConfig, ZeroTuningConfig])
def test_init_weights_must_be_a_bool(config_cls):
    with pytest.raises(ValueError, match="init_weights must be True or False"):
        config_cls(init_weights="yes")
