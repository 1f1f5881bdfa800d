"""Attribution: head writes sum to the attention output, direct logit attribution against a hand-written
RMSNorm / LayerNorm computation and the exact decomposition of the logit, and the logit lens against
truncated models."""

import copy

import pytest
import torch
from torch import nn

import interventions as iv
from intervention_helpers import head_dim, left_padded, output_module, position_ids
from tiny_models import ADAPTED_METHODS, adapted_tiny, tiny_model

NO_SOFTCAP = ["gemma", "gpt2", "gpt_neox", "llama", "mistral", "opt", "phi3", "qwen2", "qwen3"]
ANSWERS = [5, 17, 40]


def captured(model, arch, ids, mask):
    """Pinned output-projection inputs (L, B, T, H*d), and the final norm's input (B, T, D), by hand."""
    heads, seen = {}, {}
    handles = [output_module(model, arch, l).register_forward_pre_hook(lambda m, a, l=l: heads.__setitem__(l, a[0].detach()))
               for l in range(3)]
    norm = iv.unembed.final_norm(model)
    handles.append(norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach())))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
    for handle in handles:
        handle.remove()
    return torch.stack([heads[l] for l in range(3)]), seen["x"], logits


@pytest.mark.parametrize("arch", NO_SOFTCAP)
def test_head_writes_sum_to_the_attention_output(arch):
    ids, mask = left_padded()
    model = tiny_model(arch)
    acts = iv.cache_heads(model, ids, mask, position_ids=position_ids(mask))
    last = iv.last_token(mask)
    writes = iv.head_writes(model, acts, last)  # (B, L, H, D)
    heads, _, _ = captured(model, arch, ids, mask)
    for layer in range(3):
        module = output_module(model, arch, layer)
        with torch.no_grad():
            projected = module(heads[layer][last]) - module(torch.zeros_like(heads[layer][last]))
        assert (writes[:, layer].sum(1) - projected).abs().max() < 1e-5


@pytest.mark.parametrize("arch", NO_SOFTCAP)
def test_the_heads_and_the_rest_of_the_stream_add_up_to_the_logit(arch):
    """logit(t) = sum over heads of DLA + the frozen norm applied to everything else + the norm's bias term."""
    ids, mask = left_padded()
    model = tiny_model(arch)
    last = iv.last_token(mask)
    dla = iv.direct_logit_attribution(model, ids, ANSWERS, attention_mask=mask)  # (B, L, H)
    acts = iv.cache_heads(model, ids, mask)
    writes = iv.head_writes(model, acts, last).sum((1, 2))  # (B, D)
    rows = torch.arange(3)
    x, y = acts.final_norm_input[last], acts.final_norm_output[last]
    norm = iv.unembed.FrozenNorm(iv.unembed.final_norm(model), x, y)
    unembed = iv.unembed.unembedding(model)[ANSWERS]  # (B, D)
    rest = (norm.apply(x - writes, norm.scale) * unembed).sum(-1) + (norm.bias * unembed).sum(-1)
    logits = acts.logits[rows, last.int().argmax(-1), ANSWERS]
    assert (dla.sum((1, 2)) + rest - logits).abs().max() < 1e-4
    assert dla.abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_dla_equals_a_hand_written_frozen_norm_computation(arch):
    ids, mask = left_padded()
    model = tiny_model(arch)
    d = head_dim(arch)
    heads, x, _ = captured(model, arch, ids, mask)
    last = iv.last_token(mask)
    x = x[last]  # (B, D)
    if arch == "llama":
        norm = model.model.norm
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        frozen = lambda v: norm.weight * v * scale  # noqa: E731
        unembed = model.lm_head.weight
    else:
        norm = model.transformer.ln_f
        centred = x - x.mean(-1, keepdim=True)
        scale = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + norm.eps)
        frozen = lambda v: norm.weight * (v - v.mean(-1, keepdim=True)) * scale  # noqa: E731
        unembed = model.lm_head.weight
    expected = torch.zeros(3, 3, 4)
    for layer in range(3):
        weight = output_module(model, arch, layer).weight  # Linear (out, in) / Conv1D (in, out)
        z = heads[layer][last]  # (B, H*d)
        for h in range(4):
            block = weight[:, h * d:(h + 1) * d].T if arch == "llama" else weight[h * d:(h + 1) * d]
            write = z[:, h * d:(h + 1) * d] @ block  # (B, D)
            expected[:, layer, h] = (frozen(write) * unembed[ANSWERS]).sum(-1).detach()
    dla = iv.direct_logit_attribution(model, ids, ANSWERS, attention_mask=mask, position_ids=position_ids(mask))
    assert (dla - expected).abs().max() < 1e-5


def reference_dla(model, ids, mask, answers):
    """From scratch on a Llama: each recorded o_proj input (after the model's adapters) projected once by the
    weight slice of its head, through the final RMSNorm frozen at the run's own scale, onto the answer rows."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    heads, x, _ = captured(base, "llama", ids, mask)
    last = iv.last_token(mask)
    x = x[last]
    scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + base.model.norm.variance_epsilon)
    expected = torch.zeros(ids.shape[0], 3, 4)
    for layer in range(3):
        weight = base.model.layers[layer].self_attn.o_proj.weight
        z = heads[layer][last]
        for h in range(4):
            write = z[:, h * 8:(h + 1) * 8] @ weight[:, h * 8:(h + 1) * 8].T
            expected[:, layer, h] = (base.model.norm.weight * write * scale * base.lm_head.weight[answers]).sum(-1).detach()
    return expected


@pytest.mark.parametrize("method", ADAPTED_METHODS)
def test_attribution_on_an_adapted_model_equals_a_from_scratch_reference(method):
    """The recorded heads already carry the adapter's edit: projecting them through the hooked projection
    again (or reading stale per-call state from an earlier call of another shape) would be off."""
    model = adapted_tiny(method)
    with torch.no_grad():
        model(input_ids=torch.tensor([[4, 5, 6, 7, 8, 9, 10, 11, 12]]))  # an earlier call of another shape
    ids, mask = left_padded()
    dla = iv.direct_logit_attribution(model, ids, ANSWERS, attention_mask=mask, position_ids=position_ids(mask))
    expected = reference_dla(model, ids, mask, ANSWERS)
    assert (dla - expected).abs().max() < 1e-5
    bare = reference_dla(adapted_tiny(method).unload(), ids, mask, ANSWERS)
    assert (expected - bare).abs().max() > 1e-3  # the adapter changes the attribution: the check has teeth


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_the_logit_lens_at_layer_i_is_the_model_cut_after_i_layers(arch):
    ids, mask = left_padded()
    model = tiny_model(arch)
    lens = iv.logit_lens(model, ids, attention_mask=mask)  # (B, L + 1, V)
    assert lens.shape == (3, 4, model.config.vocab_size)
    last = iv.last_token(mask)
    for kept in range(4):  # 0: the embeddings alone
        cut = copy.deepcopy(model)
        stack = getattr(cut, {"llama": "model", "gpt2": "transformer", "gpt_neox": "gpt_neox"}[arch])
        name = {"llama": "layers", "gpt2": "h", "gpt_neox": "layers"}[arch]
        setattr(stack, name, nn.ModuleList(list(getattr(stack, name))[:kept]))
        cut.config.num_hidden_layers = kept
        if arch == "gpt2":
            cut.config.n_layer = kept
        with torch.no_grad():
            logits = cut(input_ids=ids, attention_mask=mask).logits[last]
        assert (lens[:, kept] - logits).abs().max() < 1e-5, kept


def test_attribution_refuses_bad_positions_and_answers_and_plots(tmp_path):
    ids, mask = left_padded()
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="one position per row"):
        iv.direct_logit_attribution(model, ids, ANSWERS, attention_mask=mask, positions=mask.bool())
    with pytest.raises(ValueError, match="answer_ids has 2"):
        iv.direct_logit_attribution(model, ids, [5, 6], attention_mask=mask)
    with pytest.raises(IndexError, match="answer ids"):
        iv.direct_logit_attribution(model, ids, [5, 6, 10_000], attention_mask=mask)
    dla = iv.direct_logit_attribution(model, ids, ANSWERS, attention_mask=mask)
    path = iv.plot_attribution(dla, tmp_path / "dla.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
