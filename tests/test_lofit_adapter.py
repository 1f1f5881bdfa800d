import pytest
import torch

import headwise
from lofit import LofitConfig
from tiny_models import (
    ARCHS, VOCAB, hook_count, lofit_values, module_tree, randomize_adapter, reference_lofit_logits, tiny_model,
)

HEADS = [(0, 1), (1, 0), (1, 3), (2, 2)]


def inputs(batch=2, length=6, seed=3):
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_a_from_scratch_reference(arch):
    model = headwise.wrap(tiny_model(arch), LofitConfig(heads=HEADS, use_scale=True))
    randomize_adapter(model)
    ids = inputs()
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    reference = reference_lofit_logits(arch, lofit_values(model), ids)
    assert (ours - reference).abs().max() < 1e-5
    assert (ours - tiny_model(arch)(input_ids=ids).logits).abs().max() > 1e-3  # the adapter does something


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_adapter_and_disable_adapter_give_the_bare_logits(arch):
    ids = inputs()
    with torch.no_grad():
        bare = tiny_model(arch)(input_ids=ids).logits
        model = headwise.wrap(tiny_model(arch), LofitConfig(heads="all", use_scale=True))
        for param in model.parameters():
            if param.requires_grad:
                param.zero_()
        assert torch.equal(model(input_ids=ids).logits, bare)
        randomize_adapter(model)
        assert not torch.allclose(model(input_ids=ids).logits, bare)
        with model.disable_adapter():
            assert torch.equal(model(input_ids=ids).logits, bare)
        assert not torch.allclose(model(input_ids=ids).logits, bare)


@pytest.mark.parametrize("arch", ARCHS)
def test_unload_leaves_no_hook_and_the_original_module_tree(arch):
    base = tiny_model(arch)
    tree, state = module_tree(base), {k: v.clone() for k, v in base.state_dict().items()}
    model = headwise.wrap(base, LofitConfig(heads=HEADS, use_scale=True))
    randomize_adapter(model)
    assert hook_count(base) >= 3
    unloaded = model.unload()
    assert unloaded is base
    assert hook_count(unloaded) == 0
    assert module_tree(unloaded) == tree
    assert unloaded.state_dict().keys() == state.keys()
    assert all(torch.equal(unloaded.state_dict()[k], v) for k, v in state.items())
    assert not hasattr(unloaded, "peft_config")


def test_only_adapter_parameters_train_and_count_is_heads_times_dim():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS, use_scale=True))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all("lofit_" in n for n in trainable)
    assert sum(p.numel() for p in trainable.values()) == 2 * len(HEADS) * 8
    assert headwise.trainable_parameters(model)["trainable"] == 2 * len(HEADS) * 8
    assert all(p.dtype == torch.float32 for p in trainable.values())


def test_offsets_are_initialised_small_and_not_zero():
    torch.manual_seed(0)
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads="all"))
    values = torch.cat([p.flatten() for n, p in model.named_parameters() if "lofit_offset" in n])
    assert values.abs().max() > 0
    assert 0.5e-3 < values.std() < 2e-3


def test_head_out_of_range_is_a_clear_error_and_leaves_the_model_untouched():
    base = tiny_model("llama")
    tree = module_tree(base)
    with pytest.raises(IndexError, match="head 4 is out of range"):
        headwise.wrap(base, LofitConfig(heads=[(0, 4)]))
    assert module_tree(base) == tree and hook_count(base) == 0


def test_attaching_the_same_adapter_name_twice_is_an_error():
    model = headwise.wrap(tiny_model("llama"), LofitConfig(heads=HEADS))
    with pytest.raises(ValueError, match="already"):
        model.add_adapter("default", LofitConfig(heads=HEADS))


def test_l1_penalty_reaches_the_loss():
    torch.manual_seed(0)
    ids = inputs()
    config = LofitConfig(heads="all", use_scale=True, use_offset=False, l1_lambda=0.5)
    model = headwise.wrap(tiny_model("llama"), config)
    randomize_adapter(model)
    scales = [p for n, p in model.named_parameters() if "lofit_scale" in n]
    with torch.no_grad():
        with_penalty = model(input_ids=ids, labels=ids).loss
        with model.disable_adapter():
            bare = model(input_ids=ids, labels=ids).loss
        plain = tiny_model("llama")
        hooked = reference_lofit_logits("llama", lofit_values(model), ids)
    task = torch.nn.functional.cross_entropy(hooked[:, :-1].reshape(-1, hooked.shape[-1]), ids[:, 1:].reshape(-1))
    expected = task + 0.5 * sum(p.abs().sum() for p in scales)
    assert torch.allclose(with_penalty, expected, atol=1e-5)
    assert torch.allclose(bare, plain(input_ids=ids, labels=ids).loss)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_model_keeps_fp32_adapter_and_a_tiny_scale_still_counts(dtype):
    ids = inputs()
    base = tiny_model("llama").to(dtype)
    with torch.no_grad():
        bare = base(input_ids=ids).logits.clone()
    model = headwise.wrap(base, LofitConfig(heads="all", use_scale=True, use_offset=False))
    scales = [p for n, p in model.named_parameters() if "lofit_scale" in n]
    assert scales and all(p.dtype == torch.float32 for p in scales)
    with torch.no_grad():
        for p in scales:
            p.fill_(1e-3)
        assert torch.tensor(1.0, dtype=torch.bfloat16) + 1e-3 == 1.0  # why the adapter must stay fp32
        out = model(input_ids=ids).logits
    assert out.dtype == dtype
    assert (out.float() - bare.float()).abs().max() > 0


def _layers_carrying_grad(model, layers, **inputs) -> list[bool]:
    """Per decoder layer: whether its output is part of the autograd graph in a forward pass."""
    carried = [None] * len(layers)
    handles = [layer.register_forward_hook(lambda m, a, out, i=i: carried.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad))
               for i, layer in enumerate(layers)]
    try:
        model(**inputs).loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return carried


@pytest.mark.parametrize("first", [1, 2])
def test_backward_stops_at_the_earliest_adapted_layer(first):
    """Nothing below the adapted heads requires grad, so the backward pass never runs through those layers."""
    base = tiny_model("llama")
    model = headwise.wrap(base, LofitConfig(heads=[(layer, 0) for layer in range(first, 3)], init_weights=False))
    ids = inputs()
    carried = _layers_carrying_grad(model, base.model.layers, input_ids=ids, labels=ids)
    assert carried == [layer >= first for layer in range(3)]
    assert all(p.grad is None for n, p in model.named_parameters() if "lofit_" not in n)
