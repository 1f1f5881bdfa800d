"""Attribution at head resolution: what each head writes into the residual stream, its direct effect
on an answer's logit, and the logit lens.

Direct logit attribution of head h (layer l) onto token t at position p:

    DLA[l, h] = N_frozen(W_O[:, h] z_h(p)) . W_U[t]

where ``W_O[:, h] z_h`` is the head's write (the output projection evaluated on that head's slice
alone, bias excluded) and ``N_frozen`` the final norm with its scale taken from the clean run
(:class:`~interventions.unembed.FrozenNorm`). The logits are the unembedding's, before any soft-cap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from headwise.hooks import bare_projection
from headwise.sites import find_head_sites

from .cache import HeadActivations, cache_heads
from .positions import check_positions, last_token
from .unembed import FrozenNorm, final_norm, unembedding

__all__ = ["head_writes", "direct_logit_attribution", "logit_lens", "plot_attribution"]


def _one_per_row(positions: torch.Tensor) -> torch.Tensor:
    """(B,) column of the single selected position of each row."""
    counts = positions.sum(-1)
    if not (counts == 1).all():
        raise ValueError(f"attribution reads one position per row; the positions select {counts.tolist()} tokens per row")
    return positions.int().argmax(-1)


def head_writes(model: nn.Module, acts: HeadActivations, positions: torch.Tensor) -> torch.Tensor:
    """(B, L, H, D) what each head adds to the residual stream at the one selected position per row: the
    output projection applied to that head's slice alone, minus the projection of zero (its bias). The
    recorded heads already carry the model's adapters, so they go through the bare projection, once."""
    columns = _one_per_row(check_positions(positions, acts.heads.shape[1]))
    sites = find_head_sites(model)
    rows = torch.arange(acts.heads.shape[1])
    out = []
    for site in sites:
        z = acts.heads[site.layer, rows, columns]  # (B, H, d)
        batch, num_heads, dim = z.shape
        eye = torch.eye(num_heads)[:, :, None]  # (H, H, 1): keep head h only
        alone = (z[:, None] * eye[None]).reshape(batch, num_heads, num_heads * dim)  # (B, H, H*d)
        param = next(site.output.parameters())
        with torch.no_grad():
            projected = bare_projection(site.output, alone.to(param.device, param.dtype)).float()
            zero = bare_projection(site.output, torch.zeros_like(alone[:1, :1]).to(param.device, param.dtype)).float()
        out.append((projected - zero).cpu())  # (B, H, D)
    return torch.stack(out, dim=1)


def direct_logit_attribution(
    model: nn.Module,
    input_ids: torch.Tensor,
    answer_ids: torch.Tensor | Sequence[int],
    attention_mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    **forward_kwargs,
) -> torch.Tensor:
    """(B, L, H) each head's direct contribution to the logit of ``answer_ids[b]`` at the selected
    position of row b (default: the last real token), the final norm frozen from this clean run.
    ``forward_kwargs`` (e.g. ``position_ids``) go to the model's forward."""
    if positions is None:
        positions = last_token(attention_mask if attention_mask is not None else torch.ones_like(input_ids))
    answers = torch.as_tensor(answer_ids).reshape(-1)
    if answers.numel() != input_ids.shape[0]:
        raise ValueError(f"answer_ids has {answers.numel()} tokens for a batch of {input_ids.shape[0]} rows")
    acts = cache_heads(model, input_ids, attention_mask, **forward_kwargs)
    columns = _one_per_row(check_positions(positions, input_ids.shape[0]))
    writes = head_writes(model, acts, positions)  # (B, L, H, D)
    rows = torch.arange(input_ids.shape[0])
    norm = FrozenNorm(final_norm(model), acts.final_norm_input[rows, columns], acts.final_norm_output[rows, columns])
    normed = norm.apply(writes, norm.scale[:, None, None])  # (B, L, H, D)
    unembed = unembedding(model)
    if answers.max() >= unembed.shape[0] or answers.min() < 0:
        raise IndexError(f"answer ids must be in 0..{unembed.shape[0] - 1}")
    return torch.einsum("blhd,bd->blh", normed, unembed[answers].cpu())


def logit_lens(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
    **forward_kwargs,
) -> torch.Tensor:
    """(B, L + 1, V) logits read from the residual stream at the selected position (default: the last real
    token) after the embeddings (0) and after each layer (1..L), each through the final norm and the
    unembedding; entry L is the model's own logits."""
    if positions is None:
        positions = last_token(attention_mask if attention_mask is not None else torch.ones_like(input_ids))
    columns = _one_per_row(check_positions(positions, input_ids.shape[0]))
    layers = find_head_sites(model)
    norm = final_norm(model)
    captured: list[torch.Tensor] = []
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    cap = getattr(base.config, "final_logit_softcapping", None)
    rows = torch.arange(input_ids.shape[0])
    with torch.no_grad():
        output = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False, **forward_kwargs)
        states = output.hidden_states
        if len(states) != len(layers) + 1:
            raise RuntimeError(f"the model returned {len(states)} hidden states for {len(layers)} layers")
        for state in states[:-1]:  # the last one is already normed by the model
            logits = head(norm(state[rows, columns.to(state.device)][:, None]))[:, 0].float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            captured.append(logits.cpu())
        captured.append(output.logits[rows, columns.to(output.logits.device)].float().cpu())
    return torch.stack(captured, dim=1)


def plot_attribution(scores: torch.Tensor, path: str | Path, title: str = "direct logit attribution", top: int = 5) -> Path:
    """A layers x heads heatmap of an (L, H) attribution (or the batch mean of a (B, L, H) one), the
    ``top`` heads by magnitude boxed."""
    from headwise.experiments.plots import plot_head_scores
    from headwise.heads import top_k_heads

    matrix = scores.float().mean(0) if scores.dim() == 3 else scores.float()
    strongest = top_k_heads(matrix.abs(), min(top, matrix.numel())) if top else []
    return plot_head_scores(matrix, path, selected=strongest, title=title, label="logit", diverging=True)
