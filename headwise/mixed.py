"""Mixed adapter batches: one adapter per row (PEFT's ``adapter_names=``), carried with the call.

``model(..., adapter_names=[...])`` and ``model.generate(..., adapter_names=[...])`` open a
:func:`rows_of_adapters` context for that call only: a ``ContextVar``, so two threads serving different
batches never see each other's rows. Every attention call of the forward pass reads it into
``AttentionCall.rows``; a holder then gathers each row's per-head tensors from a *bank* (the batch's
distinct adapters stacked, the bare model's identity for ``"__base__"`` and for adapters a layer does
not hold) with one index per layer, and applies its math once to the whole batch. The work per layer
grows with the distinct adapters of the batch, never with the adapters loaded.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

__all__ = ["BASE", "RowAdapters", "current_rows", "rows_of_adapters"]

BASE = "__base__"  # PEFT's name for a row that runs on the bare model


@dataclass(frozen=True)
class RowAdapters:
    """The adapter of each row of one batch, and each row's slot among the batch's distinct adapters."""

    names: tuple[str, ...]
    distinct: tuple[str, ...] = field(init=False)
    _slots: dict = field(init=False, default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "distinct", tuple(dict.fromkeys(self.names)))

    def __len__(self) -> int:
        return len(self.names)

    def slots(self, device: torch.device) -> torch.Tensor:
        """(B,) long: row b uses ``distinct[slots[b]]`` (made once per device for the whole pass)."""
        slots = self._slots.get(device)
        if slots is None:
            index = {name: i for i, name in enumerate(self.distinct)}
            slots = torch.tensor([index[name] for name in self.names], dtype=torch.long, device=device)
            self._slots[device] = slots
        return slots

    def rows_of(self, name: str, device: torch.device) -> torch.Tensor:
        """(n,) long: the rows that use ``name``."""
        return (self.slots(device) == self.distinct.index(name)).nonzero().squeeze(1)

    def uniform(self) -> str | None:
        """The one adapter every row uses, or None for a mixed batch."""
        return self.distinct[0] if len(self.distinct) == 1 else None


_ROWS: ContextVar[RowAdapters | None] = ContextVar("headwise_row_adapters", default=None)
_open_batches = 0  # mixed batches running in any thread: what a compiled graph can check (it cannot read _ROWS)


def current_rows() -> RowAdapters | None:
    """The row adapters of the forward pass in progress in this thread (None: every row on the active adapters)."""
    if torch.compiler.is_compiling():
        if _open_batches:
            raise NotImplementedError("adapter_names= (mixed batches) does not run under torch.compile: call the "
                                      "uncompiled model for mixed batches")
        return None
    return _ROWS.get()


@contextlib.contextmanager
def rows_of_adapters(names: Sequence[str]) -> Iterator[RowAdapters]:
    """Run the forward passes inside the block with adapter ``names[b]`` on row ``b`` (this thread only)."""
    global _open_batches
    rows = RowAdapters(tuple(names))
    token = _ROWS.set(rows)
    _open_batches += 1
    try:
        yield rows
    finally:
        _open_batches -= 1
        _ROWS.reset(token)
