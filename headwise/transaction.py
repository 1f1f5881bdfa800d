"""Validate, then mutate: a failed call leaves the model exactly as it was.

``unchanged_on_error(model)`` records what attaching an adapter or a training run can change and puts
all of it back if the block raises:

- every module's own attributes, one level deep: its children, parameter and buffer tables, hook
  tables, the site edits of ``headwise.hooks``, its ``training`` flag and any plain attribute (a new
  one is removed, a replaced one put back, a dict / list / set edited in place gets its old contents);
- which parameters require grad;
- the model's config (``use_cache`` and the rest), deep-copied.

Parameter *values* are not copied unless named: ``values=`` takes tensors (e.g. the gammas a grid
search sets) whose contents are copied too and written back. Code that changes base weights (merging)
checks everything before it folds anything.

``unchanged_on_error(model, covers_nested=True)`` is one transaction for many steps (loading a
thousand adapters): calls made inside it on ``model`` or any of its modules take no snapshot of their
own, since the outer one already puts everything back if the block raises. Use it only where no error
is caught inside the block.

``restored_after(model)`` puts the same back whatever happens, for work on a temporary adapter
(LoFiT's head selection trains one and must leave the model as it found it).

``check_count`` / ``check_positive`` are the argument checks the mutating helpers run first.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import numbers
from typing import Iterable

import torch
from torch import nn

__all__ = ["check_count", "check_positive", "restored_after", "unchanged_on_error"]

_CONTAINERS = (dict, list, set)
_COVERED: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("headwise_covered_modules", default=frozenset())


def _contents(value):
    """A shallow copy of a dict / list / set attribute (to restore it in place), else None."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, set):
        return set(value)
    return None


def _refill(container, contents) -> None:
    if isinstance(container, list):
        container[:] = contents
    else:
        container.clear()
        container.update(contents)


class _Snapshot:
    def __init__(self, model: nn.Module, values: Iterable[torch.Tensor] = ()) -> None:
        self.modules = []
        for module in model.modules():
            attributes = dict(vars(module))
            contents = {name: _contents(value) for name, value in attributes.items() if isinstance(value, _CONTAINERS)}
            self.modules.append((module, attributes, contents))
        self.requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        config = getattr(model, "config", None)
        self.config = None if config is None or not hasattr(config, "__dict__") else (config, copy.deepcopy(vars(config)))
        with torch.no_grad():
            self.values = [(tensor, tensor.detach().clone()) for tensor in values]

    def restore(self) -> None:
        for module, attributes, contents in self.modules:
            state = vars(module)
            for name in [name for name in state if name not in attributes]:
                del state[name]
            state.update(attributes)
            for name, saved in contents.items():
                _refill(attributes[name], saved)
        for param, flag in self.requires_grad:
            param.requires_grad_(flag)
        if self.config is not None:
            config, state = self.config
            vars(config).clear()
            vars(config).update(state)
        with torch.no_grad():
            for tensor, saved in self.values:
                tensor.copy_(saved)


@contextlib.contextmanager
def unchanged_on_error(model: nn.Module, values: Iterable[torch.Tensor] = (), covers_nested: bool = False):
    """Run the block; if it raises, undo what it did to ``model`` (its modules' attributes, hooks, trainable
    flags and config, and the contents of the tensors in ``values``), then re-raise. With ``covers_nested``,
    transactions opened inside the block on ``model`` or its modules are this one (no snapshot of their own)."""
    values = list(values)
    if id(model) in _COVERED.get() and not values:
        yield
        return
    snapshot = _Snapshot(model, values)
    token = _COVERED.set(_COVERED.get() | {id(module) for module, _, _ in snapshot.modules}) if covers_nested else None
    try:
        yield
    except BaseException:
        snapshot.restore()
        raise
    finally:
        if token is not None:
            _COVERED.reset(token)


@contextlib.contextmanager
def restored_after(model: nn.Module, values: Iterable[torch.Tensor] = ()):
    """Run the block, then put ``model`` back as it was (as ``unchanged_on_error`` does), whether the
    block raised or not."""
    snapshot = _Snapshot(model, values)
    try:
        yield
    finally:
        snapshot.restore()


def check_count(name: str, value, minimum: int = 1) -> None:
    """``value`` must be an integer >= ``minimum`` (a bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_positive(name: str, value, allow_zero: bool = False) -> None:
    """``value`` must be a finite real number > 0 (>= 0 with ``allow_zero``)."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (value >= 0 if allow_zero else value > 0))
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
