"""The core math of LoFiT's offset and of the attention override, against references written from scratch
on a fresh copy of the bare tiny Llama (hand-written hooks on ``model.layers[l].self_attn``; head h of the
output projection's input is the slice [h * d, (h + 1) * d), d = 8; 4 query heads over 2 KV heads)."""

import torch

import headwise
import interventions as iv
import lofit
from intervention_helpers import full_logits, left_padded, position_ids
from tiny_models import reference_lofit_logits, tiny_model

HEADS = [(0, 1), (1, 2), (2, 3)]
D = 8


def holders(model):
    return [m for m in model.modules() if isinstance(m, lofit.LofitLayer) and "default" in m.lofit_offset]


def write_u(model, seed: int = 5) -> dict[tuple[int, int], torch.Tensor]:
    """Write clearly non-zero trained parameters u into every holder; returns {(layer, head): u_h}."""
    generator = torch.Generator().manual_seed(seed)
    written = {}
    with torch.no_grad():
        for holder in holders(model):
            u = torch.randn(holder.lofit_offset["default"].shape, generator=generator)
            holder.lofit_offset["default"].copy_(u)
            for row, head in enumerate(holder.head_index["default"].tolist()):
                written[(holder.site.layer, head)] = u[row]
    return written


def lofit_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_default_lofit_adds_the_offset_to_each_head_output():
    """Guards the sign in the default (offset-only) path: ``heads + shift``, not ``heads - shift``."""
    config = lofit.LofitConfig(heads=HEADS)
    assert config.use_offset and not config.use_scale  # the path under test is the default one
    model = headwise.wrap(tiny_model("llama"), config)
    u = write_u(model)  # the units are 1 by default, so v = u
    ids, mask = left_padded()
    got = lofit_logits(model, ids, mask)
    expected = reference_lofit_logits("llama", {key: {"offset": v} for key, v in u.items()}, ids, mask)
    bare = reference_lofit_logits("llama", {}, ids, mask)
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max() < 1e-5
    assert (got[real] - bare[real]).abs().max() > 1e-2


def test_offset_units_keep_v_and_scale_the_trained_parameter():
    """Guards ``v = unit * u`` in ``LofitLayer.offset`` (dropping the unit): setting units leaves the outputs
    unchanged, and after writing u the model adds exactly unit * u."""
    model = headwise.wrap(tiny_model("llama"), lofit.LofitConfig(heads=HEADS))
    write_u(model, seed=6)
    ids, mask = left_padded()
    before = lofit_logits(model, ids, mask)
    units = 0.25 + torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5  # (L, H), every value != 1
    lofit.set_offset_units(model, units)
    real = mask.bool()
    assert (lofit_logits(model, ids, mask)[real] - before[real]).abs().max() < 1e-5  # (a) v unchanged

    u = write_u(model, seed=7)
    got = lofit_logits(model, ids, mask)
    values = {(l, h): {"offset": units[l, h] * u_h} for (l, h), u_h in u.items()}
    assert (got[real] - reference_lofit_logits("llama", values, ids, mask)[real]).abs().max() < 1e-5  # (b)
    unscaled = {key: {"offset": u_h} for key, u_h in u.items()}
    assert (got[real] - reference_lofit_logits("llama", unscaled, ids, mask)[real]).abs().max() > 1e-2


def test_override_attention_mixes_the_query_heads_own_kv_head():
    """Guards the GQA KV head of a query head, ``h // (H / H_kv)`` (not ``h % H_kv``): heads (1, 1) -> KV 0
    and (2, 2) -> KV 1, where the modulo would pick the other KV head."""
    ids, mask = left_padded()
    queries = iv.last_token(mask)
    generator = torch.Generator().manual_seed(0)
    patterns = {(1, 1): torch.rand(ids.shape, generator=generator) * mask,
                (2, 2): torch.rand(ids.shape, generator=generator) * mask}
    model = tiny_model("llama")
    bare = full_logits(model, ids, mask)
    with iv.override_attention(model, patterns, queries=queries):
        got = full_logits(model, ids, mask)

    reference = tiny_model("llama")
    groups = reference.config.num_attention_heads // reference.config.num_key_value_heads
    seen, handles = {}, []
    for layer in (1, 2):
        attention = reference.model.layers[layer].self_attn
        handles.append(attention.v_proj.register_forward_hook(
            lambda m, args, out, layer=layer: seen.__setitem__(layer, out.unflatten(-1, (-1, D)))))  # (B, T, H_kv, d)

        def write(module, args, layer=layer):
            z = args[0].clone()
            for (l, h), pattern in patterns.items():
                if l == layer:
                    a = pattern / pattern.sum(-1, keepdim=True)  # (B, T) over keys
                    mixed = torch.einsum("bk,bkd->bd", a, seen[layer][:, :, h // groups])  # sum_k a'_k v(k)
                    z[..., h * D:(h + 1) * D] = torch.where(queries[..., None], mixed[:, None], z[..., h * D:(h + 1) * D])
            return (z,)

        handles.append(attention.o_proj.register_forward_pre_hook(write))
    expected = full_logits(reference, ids, mask)
    for handle in handles:
        handle.remove()
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max() < 1e-5
    assert (got[real] - bare[real]).abs().max() > 1e-3
