"""Position selectors: which tokens of a batch an intervention touches, as a ``(B, T)`` boolean mask.

Every selector reads the real tokens from the attention mask, never from column 0, so the same
selection is right under left padding, right padding and none. Token indices count real tokens:
0 is each row's first real token, -1 its last.

Two kinds of use:
- in analysis code, call a selector on the batch (``last_token(mask)``, ``token_occurrences(ids, {7})``,
  ``span_positions(encoding, texts, ["Paris"])``) and pass the mask to a context manager;
- inside an adapter (a saved config holds plain indices), :func:`select_real_positions` resolves the
  indices at every call from the attention mask the attention module receives (KV cache included).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

__all__ = [
    "all_tokens", "last_token", "token_index", "token_occurrences", "span_positions", "select_real_positions",
    "check_positions",
]


def _real(attention_mask: torch.Tensor | None, input_ids: torch.Tensor | None = None) -> torch.Tensor:
    if attention_mask is None:
        if input_ids is None:
            raise ValueError("give the batch's attention_mask (or input_ids) so padding is known")
        return torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, tokens), got shape {tuple(attention_mask.shape)}")
    return attention_mask.bool()


def all_tokens(attention_mask: torch.Tensor) -> torch.Tensor:
    """Every real (non-pad) token."""
    return _real(attention_mask).clone()


def select_real_positions(real: torch.Tensor, indices: Iterable[int]) -> torch.Tensor:
    """(B, T) bool: the real tokens whose index among their row's real tokens is one of ``indices``
    (negative: counted from the row's last real token). A row too short for an index skips it."""
    real = real.bool()
    rank = real.long().cumsum(-1) - 1  # (B, T): index among real tokens (valid where real)
    count = real.long().sum(-1, keepdim=True)  # (B, 1)
    chosen = torch.zeros_like(real)
    for index in indices:
        target = index if index >= 0 else count + index  # int or (B, 1)
        chosen |= real & (rank == target)
    return chosen


def token_index(attention_mask: torch.Tensor, index: int | Sequence[int]) -> torch.Tensor:
    """The real token(s) at ``index`` of each row (0 = first real token, -1 = last)."""
    indices = [index] if isinstance(index, int) else list(index)
    return select_real_positions(_real(attention_mask), indices)


def last_token(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each row's last real token (position -1 under left padding, before the pads under right padding)."""
    return token_index(attention_mask, -1)


def token_occurrences(
    input_ids: torch.Tensor, token_ids: Iterable[int], attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Every real position holding one of ``token_ids`` (e.g. all mentions of the distractor colours)."""
    wanted = torch.tensor(sorted({int(t) for t in token_ids}), device=input_ids.device)
    if wanted.numel() == 0:
        raise ValueError("token_ids is empty: name at least one token id")
    return torch.isin(input_ids, wanted) & _real(attention_mask, input_ids)


def span_positions(encoding, texts: Sequence[str], spans: Sequence[str | tuple[int, int]], occurrence: int = 0) -> torch.Tensor:
    """The tokens of each text that overlap a character span: multi-token words come out whole.

    ``encoding`` is the tokenizer's output for ``texts`` with ``return_offsets_mapping=True`` (any padding
    side); ``spans[i]`` is a substring of ``texts[i]`` (its ``occurrence``-th match) or a ``(start, end)``
    character range. Special and pad tokens (empty offsets) are never selected.
    """
    offsets = encoding.get("offset_mapping") if hasattr(encoding, "get") else None
    if offsets is None:
        raise ValueError("the encoding has no offset_mapping: tokenize with return_offsets_mapping=True (a fast tokenizer)")
    offsets = torch.as_tensor(offsets)  # (B, T, 2)
    if not (len(texts) == len(spans) == offsets.shape[0]):
        raise ValueError(f"got {len(texts)} texts, {len(spans)} spans and an encoding of {offsets.shape[0]} rows")
    real = _real(torch.as_tensor(encoding["attention_mask"])) if "attention_mask" in encoding else torch.ones(offsets.shape[:2], dtype=torch.bool)
    chosen = torch.zeros(offsets.shape[:2], dtype=torch.bool)
    for row, (text, span) in enumerate(zip(texts, spans)):
        if isinstance(span, str):
            start = -1
            for _ in range(occurrence + 1):
                start = text.find(span, start + 1)
                if start < 0:
                    raise ValueError(f"{span!r} does not occur {occurrence + 1} time(s) in text {row}: {text!r}")
            end = start + len(span)
        else:
            start, end = int(span[0]), int(span[1])
            if not 0 <= start < end <= len(text):
                raise ValueError(f"span {span} of text {row} is not a range inside its {len(text)} characters")
        first, last = offsets[row, :, 0], offsets[row, :, 1]
        chosen[row] = real[row] & (last > first) & (first < end) & (last > start)
        if not chosen[row].any():
            raise ValueError(f"no token of text {row} covers characters {start}..{end} ({text[start:end]!r})")
    return chosen


def check_positions(positions: torch.Tensor, batch: int | None = None, what: str = "positions") -> torch.Tensor:
    """A (B, T) boolean mask (of ``batch`` rows, when given), or a clear error."""
    if not isinstance(positions, torch.Tensor) or positions.dim() != 2 or positions.dtype != torch.bool:
        raise ValueError(f"{what} must be a (batch, tokens) bool tensor from a selector (e.g. interventions.last_token(mask)), got "
                         f"{type(positions).__name__} {tuple(getattr(positions, 'shape', ()))}")
    if batch is not None and positions.shape[0] != batch:
        raise ValueError(f"{what} has {positions.shape[0]} rows but the batch has {batch}")
    return positions
