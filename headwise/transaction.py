"""Validate, then mutate: a failed call leaves the model exactly as it was.

``unchanged_on_error(model)`` records what attaching an adapter can change (the module tree, every
module's hooks, which parameters require grad, ``peft_config`` and the model's config) and puts all of
it back if the block raises. Parameter *values* are not copied: code that changes weights (merging)
checks everything before it folds anything.
"""

from __future__ import annotations

import contextlib
import copy

from torch import nn

__all__ = ["unchanged_on_error"]

_HOOK_DICTS = (
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called", "_backward_hooks", "_backward_pre_hooks",
)
_MISSING = object()


class _Snapshot:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = [(m, dict(m._modules), {n: dict(getattr(m, n)) for n in _HOOK_DICTS if hasattr(m, n)})
                        for m in model.modules()]
        self.requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        self.peft_config = getattr(model, "peft_config", _MISSING)
        if isinstance(self.peft_config, dict):
            self.peft_config = dict(self.peft_config)
        config = getattr(model, "config", None)
        self.config = None if config is None else (config, copy.deepcopy(config.__dict__))

    def restore(self) -> None:
        for module, children, hooks in self.modules:
            module._modules.clear()
            module._modules.update(children)
            for name, entries in hooks.items():
                table = getattr(module, name)
                table.clear()
                table.update(entries)
        for param, flag in self.requires_grad:
            param.requires_grad_(flag)
        if self.peft_config is _MISSING:
            if "peft_config" in self.model.__dict__:
                del self.model.peft_config
        else:
            self.model.peft_config = self.peft_config
        if self.config is not None:
            config, state = self.config
            config.__dict__.clear()
            config.__dict__.update(state)


@contextlib.contextmanager
def unchanged_on_error(model: nn.Module):
    """Run the block; if it raises, undo what it did to ``model``'s structure, hooks and config, then re-raise."""
    snapshot = _Snapshot(model)
    try:
        yield
    except BaseException:
        snapshot.restore()
        raise
