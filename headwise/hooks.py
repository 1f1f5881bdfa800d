"""The one hook primitive under every head-level edit: adapter holders and analysis contexts alike.

A site (an attention module and the output projection its heads enter) gets one set of torch hooks,
shared by the edits registered there, which run in registration order:

- attention pre-hook: reads the call (:class:`headwise.calls.AttentionCall`), lets each edit change
  the attention's arguments (``apply_arguments``) and its additive mask (``apply_mask``), then opens
  the call's frame;
- attention forward hook (called even when the attention raises): closes the frame;
- output-projection pre-hook: the head outputs, viewed as fp32 ``(B, T, H, d)``, go through each
  edit's ``apply_heads``; the real projection then runs on the result (its bias, LoRA layers and
  quantized weights keep working).

The call in progress lives in a ``ContextVar`` stack of frames, not on a module: each thread (and
asyncio task) has its own, a forward nested inside another pushes its own frame, and a frame is gone
when its attention call returns. Edits therefore get every per-call fact as an argument.

bf16 / fp16: an edit below the input's resolution would round away (``z * (1 + 1e-3) == z`` in bf16),
so when a plain projection receives low-precision heads that an edit changes, a forward hook
recomputes the projection in fp32 from the fp32 edited heads and rounds once, at its output.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, NamedTuple

import torch
from torch import nn

from .calls import AttentionCall, read_attention_call
from .sites import HeadSite

__all__ = ["SiteEdit", "add_edit", "remove_edit", "current_call", "edits_at", "bare_projection", "project_fp32"]

LOW_PRECISION = (torch.bfloat16, torch.float16)
_STATE = "_headwise_site"  # attribute of the attention module holding its SiteState (snapshotted by transactions)


class SiteEdit:
    """What an edit registered at a site may override. Each method must be a pure function of its
    arguments and the edit's own parameters (activation checkpointing re-runs them; threads share them)."""

    changes_heads: bool = True  # False: an observer (records the heads, returns them unchanged)

    def applies_to(self, call: AttentionCall | None) -> bool:
        """Whether ``apply_heads`` runs for this call (``call`` is None when the projection runs outside
        an attention call). Checked before the heads are unflattened: keep it cheap."""
        return True

    def apply_heads(self, heads: torch.Tensor, call: AttentionCall | None) -> torch.Tensor:
        """The fp32 ``(B, Tq, H, d)`` head outputs of this call, edited (or returned as they are)."""
        return heads

    def apply_mask(self, mask: torch.Tensor | None, call: AttentionCall) -> torch.Tensor | None:
        """A new additive attention mask ``(B, 1|H, Tq, Tk)`` for this call, or None to keep it. ``mask`` is
        the one an earlier edit of this call made, or None (then start from ``call.masks(dtype)[1]``)."""
        return None

    def apply_arguments(self, call: AttentionCall, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """New ``(args, kwargs)`` for the attention module, or None to keep them."""
        return None


    def site_roles(self) -> set[str]:
        """Which of "heads", "mask", "arguments" this edit acts on (by default: the methods it overrides)."""
        names = {"heads": "apply_heads", "mask": "apply_mask", "arguments": "apply_arguments"}
        return {role for role, name in names.items() if getattr(type(self), name) is not getattr(SiteEdit, name)}


class _SiteState(NamedTuple):
    handles: tuple
    edits: tuple  # every registered edit, in order
    head_edits: tuple  # those that override apply_heads
    mask_edits: tuple
    argument_edits: tuple


_FRAMES: ContextVar[tuple[tuple[nn.Module, AttentionCall], ...]] = ContextVar("headwise_frames", default=())
# While torch.compile traces (dynamo cannot trace a ContextVar), the frames of the traced code: pushed and popped
# within one traced region, so the stack is empty again when the region ends.
_TRACED_FRAMES: list[tuple[nn.Module, AttentionCall]] = []


def _frames() -> tuple | list:
    return _TRACED_FRAMES if torch.compiler.is_compiling() else _FRAMES.get()


def current_call(attention: nn.Module) -> AttentionCall | None:
    """The innermost call of ``attention`` in progress in this thread / task, or None."""
    frames = _frames()
    for index in range(len(frames) - 1, -1, -1):
        if frames[index][0] is attention:
            return frames[index][1]
    return None


def _open_frame(attention: nn.Module, call: AttentionCall) -> None:
    if torch.compiler.is_compiling():
        _TRACED_FRAMES.append((attention, call))
    else:
        _FRAMES.set(_FRAMES.get() + ((attention, call),))


def _close_frame(attention: nn.Module) -> None:
    frames = _frames()
    for index in range(len(frames) - 1, -1, -1):
        if frames[index][0] is attention:
            if torch.compiler.is_compiling():
                del _TRACED_FRAMES[index]
            else:
                _FRAMES.set(frames[:index] + frames[index + 1:])
            return


def _is_plain_projection(module: nn.Module) -> bool:
    return (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D") and type(module.weight) is nn.Parameter


def project_fp32(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A plain Linear or GPT-2 Conv1D projection evaluated in fp32."""
    weight = module.weight.float()
    bias = None if module.bias is None else module.bias.float()
    if type(module).__name__ == "Conv1D":  # weight (in, out)
        out = inputs @ weight
        return out if bias is None else out + bias
    return torch.nn.functional.linear(inputs, weight, bias)


def bare_projection(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The projection's own forward with no hook at all: what the model computes from ``inputs``
    without any head edit (analysis tools project recorded heads with it, exactly once)."""
    return module.forward(inputs)


class _SiteHooks:
    """The torch hooks of one site; they read the site's current state at every call."""

    def __init__(self, site: HeadSite) -> None:
        self.site = site

    def state(self) -> _SiteState | None:
        return self.site.attention.__dict__.get(_STATE)

    def before_attention(self, module: nn.Module, args: tuple, kwargs: dict):
        state = self.state()
        if state is None:  # every edit left while a call was starting
            return None
        call = read_attention_call(self.site.layer, args, kwargs)
        changed = False
        for edit in state.argument_edits:
            new = edit.apply_arguments(call, args, kwargs)
            if new is not None:
                args, kwargs = new
                changed = True
        if state.mask_edits:
            mask = None
            for edit in state.mask_edits:
                new = edit.apply_mask(mask, call)
                if new is not None:
                    mask = new
            if mask is not None:
                kwargs["attention_mask"] = mask
                changed = True
        _open_frame(module, call)
        return (args, kwargs) if changed else None

    def after_attention(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        _close_frame(module)
        return None

    def _active(self, call: AttentionCall | None) -> list[SiteEdit]:
        state = self.state()
        return [] if state is None else [edit for edit in state.head_edits if edit.applies_to(call)]

    @staticmethod
    def _edited(x: torch.Tensor, site: HeadSite, edits: list[SiteEdit], call: AttentionCall | None) -> torch.Tensor:
        heads = x.unflatten(-1, (site.num_heads, site.head_dim))  # (B, T, H, d)
        if heads.dtype != torch.float32:  # (a no-op .float() is still a dispatch, on every call of every layer)
            heads = heads.float()
        for edit in edits:
            heads = edit.apply_heads(heads, call)
        return heads.flatten(-2)  # (B, T, H*d) fp32

    def before_output(self, module: nn.Module, args: tuple):
        x = args[0]
        call = current_call(self.site.attention)
        edits = self._active(call)
        if not edits:
            return None
        changes = any(e.changes_heads for e in edits)
        if changes and x.dtype in LOW_PRECISION and _is_plain_projection(module):
            return None  # after_output computes this call in fp32
        edited = self._edited(x, self.site, edits, call)
        if not changes:  # observers only: they have seen the heads
            return None
        return (edited if edited.dtype == x.dtype else edited.to(x.dtype), *args[1:])

    def after_output(self, module: nn.Module, args: tuple, output: torch.Tensor):
        x = args[0]
        if x.dtype not in LOW_PRECISION or not _is_plain_projection(module):
            return None
        call = current_call(self.site.attention)
        edits = self._active(call)
        if not edits or not any(e.changes_heads for e in edits):
            return None
        return project_fp32(module, self._edited(x, self.site, edits, call)).to(output.dtype)


def _install(site: HeadSite) -> tuple:
    hooks = _SiteHooks(site)
    return (
        site.attention.register_forward_pre_hook(hooks.before_attention, with_kwargs=True),
        site.attention.register_forward_hook(hooks.after_attention, with_kwargs=True, always_call=True),
        site.output.register_forward_pre_hook(hooks.before_output),
        site.output.register_forward_hook(hooks.after_output),
    )


def _state(edits: tuple, handles: tuple) -> _SiteState:
    roles = [edit.site_roles() for edit in edits]
    return _SiteState(
        handles, edits,
        tuple(e for e, r in zip(edits, roles) if "heads" in r),
        tuple(e for e, r in zip(edits, roles) if "mask" in r),
        tuple(e for e, r in zip(edits, roles) if "arguments" in r),
    )


def edits_at(site: HeadSite) -> tuple:
    """The edits registered at ``site``, in the order they run."""
    state = site.attention.__dict__.get(_STATE)
    return () if state is None else state.edits


def add_edit(site: HeadSite, edit: SiteEdit) -> None:
    """Register ``edit`` at ``site`` (after the edits already there); the site's hooks are installed with
    its first edit. Registering the same edit twice is an error."""
    if not isinstance(edit, SiteEdit):
        raise TypeError(f"a site edit subclasses headwise.hooks.SiteEdit, got {type(edit).__name__}")
    state = site.attention.__dict__.get(_STATE)
    if state is not None and any(e is edit for e in state.edits):
        raise RuntimeError(f"this {type(edit).__name__} is already attached to layer {site.layer}")
    handles = state.handles if state is not None else _install(site)
    site.attention.__dict__[_STATE] = _state((state.edits if state is not None else ()) + (edit,), handles)


def remove_edit(site: HeadSite, edit: SiteEdit) -> None:
    """Unregister ``edit``; the site's hooks go with its last edit."""
    state = site.attention.__dict__.get(_STATE)
    if state is None or not any(e is edit for e in state.edits):
        return
    edits = tuple(e for e in state.edits if e is not edit)
    if edits:
        site.attention.__dict__[_STATE] = _state(edits, state.handles)
        return
    for handle in state.handles:
        handle.remove()
    del site.attention.__dict__[_STATE]
