"""Tiny random decoders of every architecture in the head-site table, built from configs in milliseconds."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 96

# model_type -> config kwargs; 3 layers, 4 query heads, GQA where the architecture has it
TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "qwen2": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "qwen3": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=12),
    "gemma": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16),
    "gemma2": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "phi3": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "gpt2": dict(n_embd=32, n_layer=3, n_head=4, n_positions=64),
    "gpt_neox": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4),
    "opt": dict(hidden_size=32, ffn_dim=48, num_hidden_layers=3, num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=64),
}
ARCHS = sorted(TINY_CONFIGS)


def tiny_config(model_type: str, **overrides):
    kwargs = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    kwargs.update(TINY_CONFIGS[model_type])
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides), attn_implementation="eager")
    return model.eval()


def randomize_adapter(peft_model, std: float = 0.5, seed: int = 1) -> None:
    """Give every adapter parameter a large random value so its effect is visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lofit_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def lofit_values(peft_model, adapter_name: str = "default") -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """{(layer, head): {'scale': A, 'offset': v}} read from the holders."""
    from lofit import LofitLayer

    values = {}
    for module in peft_model.modules():
        if isinstance(module, LofitLayer) and adapter_name in module.head_index:
            for row, head in enumerate(module.head_index[adapter_name].tolist()):
                entry = values.setdefault((module.site.layer, head), {})
                if adapter_name in module.lofit_scale:
                    entry["scale"] = module.lofit_scale[adapter_name][row].detach().clone()
                if adapter_name in module.lofit_offset:
                    entry["offset"] = module.offset(adapter_name)[row].detach().clone()
    return values


# Written out here, not read from headwise: where each architecture's head outputs enter, and each head's width.
PINNED_SITES = {
    **{arch: "model.layers.{}.self_attn.o_proj" for arch in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3")},
    "gpt2": "transformer.h.{}.attn.c_proj",
    "gpt_neox": "gpt_neox.layers.{}.attention.dense",
    "opt": "model.decoder.layers.{}.self_attn.out_proj",
}
PINNED_HEAD_DIM = {"qwen3": 12, "gemma": 16, "gemma2": 16}  # the rest: hidden 32 / 4 heads = 8


def reference_lofit_logits(arch: str, values, input_ids, attention_mask=None, seed: int = 0):
    """LoFiT computed from scratch on a fresh copy of the bare model: a hand-written hook per layer, on the
    pinned module, head h being the input slice [h * d, (h + 1) * d)."""
    model = tiny_model(arch, seed=seed)
    dim = PINNED_HEAD_DIM.get(arch, 8)
    handles = []
    for layer in range(3):
        def hook(module, args, layer=layer):
            z = args[0].clone()
            for (l, h), entry in values.items():
                if l == layer:
                    part = z[..., h * dim:(h + 1) * dim]
                    if "scale" in entry:
                        part = (1 + entry["scale"]) * part
                    if "offset" in entry:
                        part = part + entry["offset"]
                    z[..., h * dim:(h + 1) * dim] = part
            return (z,)

        handles.append(model.get_submodule(PINNED_SITES[arch].format(layer)).register_forward_pre_hook(hook))
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    for handle in handles:
        handle.remove()
    return logits


def hook_count(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def module_tree(model) -> list[tuple[str, str]]:
    return [(name, type(module).__name__) for name, module in model.named_modules()]


def train_on_ids(model, ids, steps: int = 20, lr: float = 0.1) -> list[float]:
    """Adam on the trainable parameters, language-modelling ``ids``; returns the losses."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses


ADAPTED_METHODS = ["lofit", "soft_injection", "zerotuning", "gate"]


def adapted_tiny(method: str, attn_implementation: str = "sdpa"):
    """A tiny Llama carrying one clearly non-identity adapter of ``method`` (a gate at the last token)."""
    import headwise
    import interventions as iv
    from lofit import LofitConfig
    from soft_injection import inject
    from zerotuning import ZeroTuningConfig

    base = tiny_model("llama")
    base.set_attn_implementation(attn_implementation)
    sites = headwise.find_head_sites(base)
    shape = (len(sites), sites[0].num_heads, sites[0].head_dim)
    if method == "lofit":
        return headwise.wrap(base, LofitConfig(heads=[(0, 1), (1, 2), (2, 3)], init_weights=False))
    if method == "soft_injection":
        return inject(base, torch.randn(shape, generator=torch.Generator().manual_seed(2)))
    if method == "zerotuning":
        return headwise.wrap(base, ZeroTuningConfig(heads="all", gamma=3.0, init_weights=False))
    if method == "gate":
        model = headwise.wrap(base, iv.HeadGateConfig(heads=[(1, 0), (2, 3)], scale=0.0, positions=[-1]))
        iv.set_baseline(model, torch.randn(shape, generator=torch.Generator().manual_seed(3)))
        return model
    raise ValueError(f"unknown method {method!r}")
