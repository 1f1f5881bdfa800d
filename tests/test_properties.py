"""Property tests over random tiny decoders (layers, heads, key/value heads, head_dim, batch, lengths,
padding side): a zero adapter is the identity, merged LoFiT equals hooked LoFiT, the KV cache changes
nothing, a padded batch equals its rows alone, and save / load is the identity."""

from __future__ import annotations

import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoConfig, AutoModelForCausalLM

import headwise
from lofit import LofitConfig
from soft_injection import SoftInjectionConfig, set_task_embedding
from zerotuning import ZeroTuningConfig

VOCAB = 64
PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def shapes(draw):
    heads = draw(st.sampled_from([2, 4, 6]))
    kv = draw(st.sampled_from([d for d in (1, 2, 3, 6) if heads % d == 0]))
    return dict(
        model_type=draw(st.sampled_from(["llama", "mistral", "qwen2"])),
        layers=draw(st.integers(1, 3)), heads=heads, kv=kv, head_dim=draw(st.sampled_from([4, 8])),
        seed=draw(st.integers(0, 10_000)),
    )


def build(shape, attention="eager"):
    config = AutoConfig.for_model(
        shape["model_type"], vocab_size=VOCAB, hidden_size=shape["heads"] * shape["head_dim"], intermediate_size=24,
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"], num_key_value_heads=shape["kv"],
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(shape["seed"])
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


def heads_of(shape, draw_pairs):
    return sorted({(l % shape["layers"], h % shape["heads"]) for l, h in draw_pairs})


def randomize(model, std=0.5):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.normal_(0.0, std)


def padded_batch(lengths, side, seed):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(3, VOCAB, (n,), generator=g) for n in lengths]
    width = max(lengths)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
    return rows, ids, mask


def logits(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


PAIRS = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=6)
LENGTHS = st.lists(st.integers(2, 7), min_size=1, max_size=4)


@PROPERTY
@given(shape=shapes(), pairs=PAIRS)
def test_a_zero_adapter_is_the_identity(shape, pairs):
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(shape["seed"]))
    bare = logits(build(shape, "sdpa"), ids)
    for config in (LofitConfig(heads=heads_of(shape, pairs), use_scale=True, init_std=0.0, scale_init_std=0.0),
                   ZeroTuningConfig(heads=heads_of(shape, pairs), gamma=1.0)):
        model = headwise.wrap(build(shape, "sdpa"), config)
        torch.testing.assert_close(logits(model, ids), bare, atol=1e-5, rtol=1e-5)
    model = headwise.wrap(build(shape, "sdpa"), SoftInjectionConfig(heads=heads_of(shape, pairs), init_theta=-1e4))
    torch.testing.assert_close(logits(model, ids), bare, atol=1e-5, rtol=1e-5)  # alpha = sigmoid(-1e4) = 0


@PROPERTY
@given(shape=shapes(), pairs=PAIRS)
def test_merged_lofit_equals_hooked_lofit(shape, pairs):
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(shape["seed"]))
    model = headwise.wrap(build(shape), LofitConfig(heads=heads_of(shape, pairs), use_scale=True))
    randomize(model)
    hooked = logits(model, ids)
    merged = model.merge_and_unload()
    torch.testing.assert_close(logits(merged, ids), hooked, atol=1e-4, rtol=1e-4)


@PROPERTY
@given(shape=shapes(), pairs=PAIRS, method=st.sampled_from(["lofit", "zerotuning"]))
def test_decoding_with_the_kv_cache_equals_the_full_forward(shape, pairs, method):
    config = LofitConfig(heads=heads_of(shape, pairs), use_scale=True) if method == "lofit" else ZeroTuningConfig(heads=heads_of(shape, pairs))
    model = headwise.wrap(build(shape, "sdpa"), config)
    randomize(model)
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(shape["seed"]))
    full = logits(model, ids)
    with torch.no_grad():
        out = model(input_ids=ids[:, :4], use_cache=True)
        steps, cache = [out.logits], out.cache
        for t in range(4, 7):
            out = model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.cache
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


@PROPERTY
@given(shape=shapes(), pairs=PAIRS, lengths=LENGTHS, side=st.sampled_from(["left", "right"]),
       method=st.sampled_from(["lofit", "soft_injection", "zerotuning"]), attention=st.sampled_from(["eager", "sdpa"]))
def test_a_padded_batch_equals_its_rows_alone(shape, pairs, lengths, side, method, attention):
    heads = heads_of(shape, pairs)
    config = {
        "lofit": LofitConfig(heads=heads, use_scale=True),
        "soft_injection": SoftInjectionConfig(heads=heads),
        "zerotuning": ZeroTuningConfig(heads=heads),
    }[method]
    model = headwise.wrap(build(shape, attention), config)
    randomize(model)
    if method == "soft_injection":
        g = torch.Generator().manual_seed(shape["seed"])
        set_task_embedding(model, torch.randn(shape["layers"], shape["heads"], shape["head_dim"], generator=g))
    rows, ids, mask = padded_batch(lengths, side, shape["seed"])
    batched = logits(model, ids, mask)
    width = ids.shape[1]
    for i, row in enumerate(rows):
        alone = logits(model, row[None])[0]
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        torch.testing.assert_close(batched[i, span], alone, atol=1e-4, rtol=1e-4)


@PROPERTY
@given(shape=shapes(), pairs=PAIRS, method=st.sampled_from(["lofit", "soft_injection", "zerotuning"]))
def test_save_then_load_is_the_identity(shape, pairs, method):
    heads = heads_of(shape, pairs)
    config = {"lofit": LofitConfig(heads=heads, use_scale=True, init_weights=False),
              "soft_injection": SoftInjectionConfig(heads=heads, init_weights=False),
              "zerotuning": ZeroTuningConfig(heads=heads, init_weights=False)}[method]
    model = headwise.wrap(build(shape, "sdpa"), config)
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(shape["seed"]))
    expected = logits(model, ids)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = headwise.from_pretrained(build(shape, "sdpa"), folder)
    torch.testing.assert_close(logits(loaded, ids), expected, atol=0, rtol=0)
