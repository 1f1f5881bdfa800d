"""Folding head-output edits into the output projection, and keeping the result a plain checkpoint.

An edit ``z -> g * z + v`` of the projection's input folds exactly into ``W' = W diag(g)`` and
``b' = b + W v``. Architectures whose output projection has no bias need one; where a config flag
adds it (Llama's ``attention_bias``), the merged model saves and reloads as a plain checkpoint.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .sites import HeadSite, architecture_spec

__all__ = ["check_plain_projection", "fold_into_projection", "make_bias_loadable"]

logger = logging.getLogger(__name__)


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # GPT-2: weight is (in, out)


def check_plain_projection(site: HeadSite) -> None:
    """Raise unless the output projection holds plain float weights that can be edited."""
    module = site.output
    weight = getattr(module, "weight", None)
    plain = isinstance(module, nn.Linear) or _is_conv1d(module)
    if not plain or type(weight) is not nn.Parameter or not weight.dtype.is_floating_point:
        raise TypeError(
            f"cannot merge into {site.output_name} ({type(module).__name__}, weight "
            f"{type(weight).__name__}/{getattr(weight, 'dtype', None)}): merging needs plain float weights. "
            "Quantized bases keep the adapter unmerged; to merge, load the base in full precision."
        )


def fold_into_projection(site: HeadSite, gain: torch.Tensor | None, shift: torch.Tensor | None) -> bool:
    """Fold ``z -> gain * z + shift`` (both (H*d,) fp32, None = identity) into the output projection.
    Returns True when a bias had to be created. (Unmerging restores saved columns: a gain of 0 cannot
    be divided out.)"""
    module = site.output
    weight = module.weight
    conv = _is_conv1d(module)
    created = False
    with torch.no_grad():
        w = weight.float()  # Linear: (out, in); Conv1D: (in, out)
        if shift is not None:
            delta = shift @ w if conv else w @ shift  # (out,)
            if module.bias is None:
                module.bias = nn.Parameter(torch.zeros_like(delta, dtype=weight.dtype), requires_grad=False)
                created = True
            bias = module.bias.float() + delta
            module.bias.copy_(bias.to(module.bias.dtype))
        if gain is not None:
            w = w * (gain[:, None] if conv else gain[None, :])
        weight.copy_(w.to(weight.dtype))
    return created


def make_bias_loadable(model: nn.Module, sites: list[HeadSite]) -> None:
    """After output biases were created: set the config flag that makes a reloaded model have them.

    The flag also gives the layer's other attention projections a bias, so they get zero biases.
    Architectures without such a flag keep the merge in memory and say that saving drops it.
    """
    config = model.config
    spec = architecture_spec(getattr(config, "model_type", None))
    if spec is None or spec.bias_flag is None:
        logger.warning(
            "merged in memory, but %s has no config flag for a bias on %s: a save_pretrained() of the merged "
            "model loses the offsets. Save the adapter itself (unmerged) instead.",
            getattr(config, "model_type", type(model).__name__),
            sites[0].output_name.rpartition(".")[2],
        )
        return
    setattr(config, spec.bias_flag, True)
    for site in sites:
        for child in site.attention.children():
            if isinstance(child, nn.Linear) and child.bias is None:
                child.bias = nn.Parameter(
                    torch.zeros(child.out_features, dtype=child.weight.dtype, device=child.weight.device),
                    requires_grad=False,
                )
