"""Where the attention heads of a HuggingFace decoder live.

A *head site* is, for one decoder layer, the attention module and the module whose **input** is the
concatenation of the per-head outputs (``o_proj``, ``c_proj``, ``dense``, ``out_proj``). Every
head-output method edits that input, viewed as ``(B, T, H, d)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ARCHITECTURES", "HeadSite", "ArchitectureSpec", "UnsupportedArchitectureError", "architectures_table", "find_head_sites"]


class UnsupportedArchitectureError(ValueError):
    """Raised when the heads of a model cannot be located."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths of one ``model_type``: ``{layer}`` in ``output`` is the decoder layer index."""

    output: str  # path of the output projection, e.g. "model.layers.{layer}.self_attn.o_proj"
    bias_flag: str | None = None  # config flag that gives the attention projections a bias, if any
    has_output_bias: bool = False  # the output projection always carries a bias


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "llama": ArchitectureSpec("model.layers.{layer}.self_attn.o_proj", bias_flag="attention_bias"),
    "mistral": ArchitectureSpec("model.layers.{layer}.self_attn.o_proj"),
    "qwen2": ArchitectureSpec("model.layers.{layer}.self_attn.o_proj"),
    "qwen3": ArchitectureSpec("model.layers.{layer}.self_attn.o_proj", bias_flag="attention_bias"),
    "gemma": ArchitectureSpec("model.layers.{layer}.self_attn.o_proj", bias_flag="attention_bias"),
    "gemma2": ArchitectureSpec("model.layers.{layer}.self_attn.o_proj", bias_flag="attention_bias"),
    "phi3": ArchitectureSpec("model.layers.{layer}.self_attn.o_proj"),
    "gpt2": ArchitectureSpec("transformer.h.{layer}.attn.c_proj", has_output_bias=True),
    "gpt_neox": ArchitectureSpec("gpt_neox.layers.{layer}.attention.dense", bias_flag="attention_bias"),
    "opt": ArchitectureSpec("model.decoder.layers.{layer}.self_attn.out_proj", has_output_bias=True),
}

def architectures_table() -> str:
    """The supported-architectures table of the docs, generated from ``ARCHITECTURES`` (a test keeps
    README.md and docs/architectures.md equal to it)."""
    rows = ["| model_type | head outputs enter (hooked, never replaced) | merged LoFiT saves as a plain checkpoint |", "|---|---|---|"]
    for model_type, spec in ARCHITECTURES.items():
        if spec.has_output_bias:
            merge = "yes: the projection has a bias"
        elif spec.bias_flag:
            merge = f"yes: merging sets `{spec.bias_flag}=True` (the other projections get zero biases)"
        else:
            merge = "in memory only: the projection has no bias option (save the adapter unmerged)"
        rows.append(f"| {model_type} | `{spec.output.replace('{layer}', '{i}')}` | {merge} |")
    return "\n".join(rows)


# Tried in order for a model_type missing from the table.
_GENERIC_OUTPUTS = (
    "model.layers.{layer}.self_attn.o_proj",
    "model.layers.{layer}.attention.o_proj",
    "transformer.h.{layer}.attn.c_proj",
    "transformer.h.{layer}.attn.out_proj",
    "transformer.h.{layer}.self_attention.dense",
    "gpt_neox.layers.{layer}.attention.dense",
    "model.decoder.layers.{layer}.self_attn.out_proj",
    "transformer.blocks.{layer}.attn.out_proj",
)


@dataclass(frozen=True)
class HeadSite:
    """The heads of one decoder layer."""

    layer: int
    attention: nn.Module  # the attention module of this layer
    output: nn.Module  # the module whose input is the concatenation of head outputs
    output_name: str  # its qualified name inside the model
    num_heads: int  # query heads
    num_kv_heads: int
    head_dim: int

    @property
    def attention_name(self) -> str:
        return self.output_name.rpartition(".")[0]


def _input_features(module: nn.Module) -> int:
    """Width of a projection's input: Linear, bitsandbytes Linear and GPT-2's Conv1D (weight stored (in, out))."""
    if hasattr(module, "in_features"):
        return int(module.in_features)
    if type(module).__name__ == "Conv1D":
        return int(module.weight.shape[0])
    raise UnsupportedArchitectureError(f"cannot read the input width of {type(module).__name__}")


def _config_int(config, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _resolve(model: nn.Module, template: str, n_layers: int) -> list[tuple[str, nn.Module]] | None:
    modules = dict(model.named_modules())
    found = []
    for layer in range(n_layers):
        name = template.format(layer=layer)
        if name not in modules:
            # a base model (LlamaModel) has no "model." prefix; a model in a wrapper has an extra one
            suffix = name.split(".", 1)[1] if name.count(".") else name
            candidates = [n for n in modules if n == suffix or n.endswith("." + name) or n.endswith("." + suffix)]
            if len(candidates) != 1:
                return None
            name = candidates[0]
        found.append((name, modules[name]))
    return found


def find_head_sites(model: nn.Module, site_template: str | None = None) -> list[HeadSite]:
    """One :class:`HeadSite` per decoder layer.

    ``site_template`` overrides the table: the module path of the output projection with ``{layer}``
    standing for the layer index, e.g. ``"model.layers.{layer}.self_attn.o_proj"``.
    """
    model = _unwrap(model)
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no .config: headwise adapts transformers models "
            "(AutoModelForCausalLM.from_pretrained(...)) whose config names the layer and head counts"
        )
    model_type = getattr(config, "model_type", None)
    n_layers = _config_int(config, "num_hidden_layers", "n_layer", "num_layers")
    n_heads = _config_int(config, "num_attention_heads", "n_head", "num_heads")
    if n_layers is None or n_heads is None:
        raise UnsupportedArchitectureError(
            f"config of model_type={model_type!r} names no layer or head count "
            "(num_hidden_layers / num_attention_heads)"
        )
    n_kv_heads = _config_int(config, "num_key_value_heads", "multi_query_group_num") or n_heads

    if site_template is not None:
        templates = [site_template]
    elif model_type in ARCHITECTURES:
        templates = [ARCHITECTURES[model_type].output]
    else:
        templates = list(_GENERIC_OUTPUTS)

    resolved = None
    for template in templates:
        if "{layer}" not in template:
            raise ValueError(f"site_template {template!r} must contain '{{layer}}' for the layer index")
        resolved = _resolve(model, template, n_layers)
        if resolved is not None:
            break
    if resolved is None:
        if site_template is not None:
            raise UnsupportedArchitectureError(
                f"site_template {site_template!r} matches no module of this {type(model).__name__} for every layer "
                f"0..{n_layers - 1}; give the path of the output projection with '{{layer}}' for the index, e.g. "
                f"{(ARCHITECTURES.get(model_type or '') or ArchitectureSpec('model.layers.{layer}.self_attn.o_proj')).output!r}"
            )
        raise UnsupportedArchitectureError(
            f"cannot find the attention heads of model_type={model_type!r} "
            f"({type(model).__name__}); supported: {', '.join(sorted(ARCHITECTURES))}. "
            "Pass site_template='<path.to.layers>.{layer}.<attention>.<output projection>' in the adapter "
            "config (the module whose input is the concatenation of the head outputs)."
        )

    modules = dict(model.named_modules())
    sites = []
    for layer, (name, output) in enumerate(resolved):
        width = _input_features(output)
        if width % n_heads:
            raise UnsupportedArchitectureError(
                f"{name} takes {width} features, not a multiple of num_attention_heads={n_heads}"
            )
        head_dim = width // n_heads
        configured = _config_int(config, "head_dim")
        if configured is not None and configured != head_dim:
            raise UnsupportedArchitectureError(
                f"{name} takes {width} features = {n_heads} heads x {head_dim}, but config.head_dim={configured}"
            )
        sites.append(
            HeadSite(
                layer=layer,
                attention=modules[name.rpartition(".")[0]],
                output=output,
                output_name=name,
                num_heads=n_heads,
                num_kv_heads=n_kv_heads,
                head_dim=head_dim,
            )
        )
    return sites


def architecture_spec(model_type: str | None) -> ArchitectureSpec | None:
    return ARCHITECTURES.get(model_type or "")

