"""ZeroTuning: exact initial-token scaling on eager and sdpa, padding and KV cache, against a from-scratch reference."""

import sys

import pytest
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

import headwise
from zerotuning import ZeroTuningConfig, ZeroTuningLayer
from tiny_models import ARCHS, VOCAB, hook_count, module_tree, tiny_model

GAMMAS: dict[int, torch.Tensor] = {}  # layer -> (H,) gamma used by the reference attention


def reference_attention(module, query, key, value, attention_mask, **kwargs):
    """The architecture's own eager attention, then the paper's definition: multiply the post-softmax
    weight on the first non-pad key by gamma and renormalise each row."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    _, probs = eager(module, query, key, value, attention_mask, **kwargs)
    gamma = GAMMAS[module.layer_idx].to(probs.dtype)
    allowed = attention_mask[:, 0, -1, : key.shape[-2]] > torch.finfo(attention_mask.dtype).min / 2
    first = allowed.int().argmax(-1)
    weight = torch.ones_like(probs)
    weight[torch.arange(probs.shape[0]), :, :, first] = gamma[None, :, None].expand(probs.shape[0], -1, probs.shape[2])
    probs = probs * weight
    probs = probs / probs.sum(-1, keepdim=True)
    groups = query.shape[1] // value.shape[1]
    out = probs.to(value.dtype) @ value.repeat_interleave(groups, dim=1)
    return out.transpose(1, 2).contiguous(), probs


AttentionInterface.register("zerotuning_reference", reference_attention)
AttentionMaskInterface.register("zerotuning_reference", eager_mask)  # or padding silently breaks

PROMPTS = [[5, 17, 33, 8, 41, 12], [9, 23, 4], [30, 6, 19, 27]]
HEADS = [(0, 1), (0, 3), (1, 0), (2, 2), (2, 3)]


def left_padded(prompts=PROMPTS):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def planted_gammas(num_layers=3, num_heads=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = {pair: float(torch.empty(1).uniform_(0.3, 4.0, generator=g)) for pair in HEADS}
    for layer in range(num_layers):
        GAMMAS[layer] = torch.tensor([values.get((layer, h), 1.0) for h in range(num_heads)])
    return values


def wrapped(arch, implementation, gammas):
    model = tiny_model(arch)
    assert implementation != "sdpa" or model._supports_sdpa, f"transformers has no sdpa attention for {arch}"
    model.set_attn_implementation(implementation)
    model = headwise.wrap(model, ZeroTuningConfig(heads=HEADS))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ZeroTuningLayer):
                for row, head in enumerate(module.head_index["default"].tolist()):
                    module.zerotuning_log_gamma["default"][row] = torch.log(torch.tensor(gammas[(module.site.layer, head)]))
    return model


def reference_model(arch):
    model = tiny_model(arch)
    model.set_attn_implementation("zerotuning_reference")
    return model


# gemma2 has no sdpa attention in transformers (eager only), so it is checked on eager alone
PAIRS = [(arch, impl) for arch in ARCHS for impl in ("eager", "sdpa") if (arch, impl) != ("gemma2", "sdpa")]


@pytest.mark.parametrize("arch, implementation", PAIRS)
def test_equals_the_post_softmax_reference_with_left_padding(arch, implementation):
    gammas = planted_gammas()
    ids, mask = left_padded()
    with torch.no_grad():
        ours = wrapped(arch, implementation, gammas)(input_ids=ids, attention_mask=mask).logits
        reference = reference_model(arch)(input_ids=ids, attention_mask=mask).logits
        bare = tiny_model(arch)(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert (ours[real] - reference[real]).abs().max() < 1e-5
    assert (ours[real] - bare[real]).abs().max() > 1e-3


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "opt"])
def test_unpadded_batch_and_kv_cache_decoding_are_exact(arch, implementation):
    gammas = planted_gammas()
    model = wrapped(arch, implementation, gammas)
    ids = torch.tensor([[5, 17, 33, 8, 41, 12], [9, 23, 4, 30, 6, 19]])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        reference = reference_model(arch)(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        assert (full - reference).abs().max() < 1e-5
        prefill = model(input_ids=ids[:, :4], use_cache=True)
        cache = prefill.cache
        for position in (4, 5):  # one token at a time through the cache
            step = model(input_ids=ids[:, position:position + 1], cache=cache, use_cache=True)
            cache = step.cache
            assert (step.logits[:, -1] - full[:, position]).abs().max() < 1e-5


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_left_padded_generation_matches_with_and_without_cache_and_alone(implementation):
    gammas = planted_gammas()
    model = wrapped("llama", implementation, gammas)
    ids, mask = left_padded()
    generate = lambda i, m, cache: model.generate(input_ids=i, attention_mask=m, max_new_tokens=5, do_sample=False, use_cache=cache, pad_token_id=0)[:, i.shape[1]:]  # noqa: E731
    with torch.no_grad():
        batched = generate(ids, mask, True)
        assert torch.equal(batched, generate(ids, mask, False))
        for row, prompt in enumerate(PROMPTS):
            alone = generate(torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), True)
            assert torch.equal(alone[0], batched[row])


def test_gamma_one_is_the_bare_model_and_disable_adapter_too():
    ids, mask = left_padded()
    with torch.no_grad():
        bare = tiny_model("llama")(input_ids=ids, attention_mask=mask).logits
        model = headwise.wrap(tiny_model("llama"), ZeroTuningConfig(heads="all", gamma=1.0))
        assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits[mask.bool()], bare[mask.bool()], atol=1e-6)
        for name, param in model.named_parameters():
            if "zerotuning_" in name:
                param.fill_(1.0)
        with model.disable_adapter():
            assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits[mask.bool()], bare[mask.bool()], atol=1e-6)


def test_bad_gamma_attention_implementation_and_merge_are_clear_errors():
    with pytest.raises(ValueError, match="gamma must be"):
        ZeroTuningConfig(gamma=0.0)
    with pytest.raises(ValueError, match="gamma must be"):
        ZeroTuningConfig(gamma=-2.0)
    model = tiny_model("llama")
    model.set_attn_implementation("zerotuning_reference")
    tree = module_tree(model)
    with pytest.raises(ValueError, match="set_attn_implementation"):
        headwise.wrap(model, ZeroTuningConfig())
    assert module_tree(model) == tree and hook_count(model) == 0
    wrapped_model = headwise.wrap(tiny_model("llama"), ZeroTuningConfig())
    with pytest.raises(TypeError, match="cannot be merged"):
        wrapped_model.merge_and_unload()


def test_whole_layers_and_gradients_reach_log_gamma_only():
    model = headwise.wrap(tiny_model("llama"), ZeroTuningConfig(heads="all", layers=[1, 2], gamma=1.5))
    assert headwise.trainable_parameters(model)["trainable"] == 2 * 4
    ids, mask = left_padded()
    model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("zerotuning_log_gamma" in n for n in with_grad)


def test_save_load_unload(tmp_path):
    gammas = planted_gammas()
    model = wrapped("llama", "sdpa", gammas)
    ids, mask = left_padded()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    base = tiny_model("llama")
    base.set_attn_implementation("sdpa")
    loaded = headwise.from_pretrained(base, tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).logits, expected)
    unloaded = loaded.unload()
    assert hook_count(unloaded) == 0 and "zerotuning" not in str(module_tree(unloaded))


def test_sliding_window_layers_refuse_sequences_longer_than_the_window():
    model = headwise.wrap(tiny_model("gemma2", sliding_window=4), ZeroTuningConfig(heads="all"))
    with torch.no_grad():
        model(input_ids=torch.randint(3, VOCAB, (1, 4)))
        with pytest.raises(ValueError, match="sliding window"):
            model(input_ids=torch.randint(3, VOCAB, (1, 6)))
