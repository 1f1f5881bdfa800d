"""The final norm and the unembedding of a causal LM, and the norm *frozen* at a clean run's scale,
which turns any residual-stream vector into its direct contribution to the logits."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["final_norm", "unembedding", "FrozenNorm"]

# Where the final norm sits, per model_type (the base model's attribute path).
_FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm", "model.final_layernorm")


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied to the residual stream before the unembedding."""
    modules = dict(_base(model).named_modules())
    for name in _FINAL_NORMS:
        if name in modules:
            return modules[name]
    raise TypeError(
        f"cannot find the final norm of {type(_base(model)).__name__} (looked for {', '.join(_FINAL_NORMS)}); "
        "attribution needs the module that normalises the residual stream before lm_head"
    )


def unembedding(model: nn.Module) -> torch.Tensor:
    """(V, D) fp32 unembedding matrix (lm_head's weight)."""
    base = _base(model)
    decoder = getattr(getattr(base, "model", None), "decoder", None)
    if getattr(decoder, "project_out", None) is not None:
        raise TypeError("this OPT model projects the final hidden state down before lm_head (word_embed_proj_dim); attribution does not support it")
    head = base.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if weight is None or weight.dim() != 2:
        raise TypeError(f"{type(base).__name__}'s output embeddings hold no plain (vocab, hidden) weight")
    return weight.detach().float()


class FrozenNorm:
    """The final norm as a linear map with its scale frozen from a clean run.

    RMSNorm: ``y = s * w * x``; LayerNorm: ``y = s * w * (x - mean(x)) + b``. With ``s`` taken per token
    from the clean run, ``apply(c)`` is the part of ``y`` that a vector ``c`` added to ``x`` accounts for
    (the LayerNorm bias belongs to no component). ``s`` is read back from the clean run's input and output,
    so no norm variant's epsilon or weight offset (Gemma's ``1 + w``) has to be known.
    """

    def __init__(self, norm: nn.Module, clean_input: torch.Tensor, clean_output: torch.Tensor) -> None:
        self.centered = isinstance(norm, nn.LayerNorm) or (type(norm).__name__.endswith("LayerNorm") and getattr(norm, "bias", None) is not None)
        width = clean_input.shape[-1]
        if self.centered:
            weight = getattr(norm, "weight", None)
            bias = getattr(norm, "bias", None)
            self.weight = torch.ones(width) if weight is None else weight.detach().float().cpu()
            self.bias = torch.zeros(width) if bias is None else bias.detach().float().cpu()
        else:
            param = next(norm.parameters(), None)
            dtype, device = (param.dtype, param.device) if param is not None else (torch.float32, torch.device("cpu"))
            with torch.no_grad():  # the effective weight: rms(100 * ones) = 100, so norm(100 * ones) = w_eff
                self.weight = norm(torch.full((1, width), 100.0, dtype=dtype, device=device)).float().cpu()[0]
            self.bias = torch.zeros(width)
        x = self._center(clean_input.float())
        direction = self.weight * x
        target = clean_output.float() - self.bias
        self.scale = (target * direction).sum(-1) / (direction * direction).sum(-1).clamp_min(1e-30)  # (B, T)

    def _center(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.centered else x

    def apply(self, vectors: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``vectors (..., D)`` through the frozen norm; ``scale`` broadcasts against ``vectors[..., 0]``."""
        return scale[..., None] * self.weight * self._center(vectors.float())
