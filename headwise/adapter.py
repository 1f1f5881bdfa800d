"""HeadLayer: holds one method's per-head parameters for one decoder layer and applies them by hook.

A holder is a PEFT tuner layer (so PEFT saves, freezes, switches and deletes its parameters) that
hangs off the layer's attention module. It never wraps or replaces a model module: it hooks the
output projection and edits that projection's input, the concatenated head outputs ``(B, T, H*d)``,
viewed as ``(B, T, H, d)``. The edit is computed in fp32.

Two paths: in fp32 a forward pre-hook hands the edited input to the projection (no extra work). In
bf16/fp16 an edit below the input's resolution would round away (``z * (1 + 1e-3) == z`` for a bf16
``z``), so a forward hook recomputes a plain projection in fp32 from the fp32 edited heads and rounds
once, at its output: one extra matmul per adapted layer, the price of adapters that keep training.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .calls import AttentionCall, read_attention_call
from .sites import HeadSite

__all__ = ["HeadLayer"]

LOW_PRECISION = (torch.bfloat16, torch.float16)


def _project(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A plain Linear or GPT-2 Conv1D projection evaluated in fp32."""
    weight = module.weight.float()
    bias = None if module.bias is None else module.bias.float()
    if type(module).__name__ == "Conv1D":  # weight (in, out)
        out = inputs @ weight
        return out if bias is None else out + bias
    return torch.nn.functional.linear(inputs, weight, bias)


def _is_plain_projection(module: nn.Module) -> bool:
    return (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D") and type(module.weight) is nn.Parameter


HOOKS = ("attention_call", "head_outputs")


class HeadLayer(nn.Module, BaseTunerLayer):
    """Base holder. Subclasses declare ``adapter_layer_names`` and the ``hooks`` they need, and
    implement ``create_parameters`` and ``edit_heads`` (for ``"head_outputs"``) and / or
    ``on_attention_call`` (for ``"attention_call"``). The base attaches and detaches the hooks; they
    must be pure functions of their inputs and the parameters (activation checkpointing re-runs them).

    - ``"attention_call"``: a pre-hook of the attention module reads the call once
      (:class:`headwise.calls.AttentionCall`: hidden states, mask, cached length), keeps it as
      ``self.call`` for the rest of the call, and passes it to ``on_attention_call``, which may return
      new ``(args, kwargs)`` for the attention module.
    - ``"head_outputs"``: the output projection's input, viewed as ``(B, T, H, d)``, goes through
      ``edit_heads`` for every applied adapter.
    """

    other_param_names: tuple[str, ...] = ("head_index",)
    hooks: tuple[str, ...] = ("head_outputs",)

    def __init__(self, site: HeadSite) -> None:
        nn.Module.__init__(self)
        # The site holds base-model modules: keep it out of the module tree, or PEFT would count the
        # projection's weights as adapter state.
        object.__setattr__(self, "site", site)
        self.num_heads = site.num_heads
        self.head_dim = site.head_dim
        self.head_index = BufferDict({}, persistent=False)  # adapter name -> sorted head indices (long)
        self._disable_adapters = False
        self._active_adapter = "default"
        self.merged_adapters: list[str] = []
        self._hook_handles: list[Any] = []
        self.call: AttentionCall | None = None  # the attention call in progress (with the "attention_call" hook)

    # -- attach / detach ------------------------------------------------------------------------
    def attach(self) -> None:
        """Register the hooks this holder declares (``hooks``) on the model."""
        if self._hook_handles:
            raise RuntimeError(f"the {type(self).__name__} of layer {self.site.layer} is already attached")
        unknown = sorted(set(self.hooks) - set(HOOKS))
        if unknown:
            raise ValueError(f"{type(self).__name__} declares unknown hooks {unknown}; headwise has {list(HOOKS)}")
        if "attention_call" in self.hooks:
            self._hook_handles.append(self.site.attention.register_forward_pre_hook(self._read_call, with_kwargs=True))
        if "head_outputs" in self.hooks:
            output = self.site.output
            self._hook_handles.append(output.register_forward_pre_hook(self._edit_output_input))
            if _is_plain_projection(output):
                self._hook_handles.append(output.register_forward_hook(self._recompute_low_precision_output))

    def _read_call(self, module: nn.Module, args: tuple, kwargs: dict):
        # Read afresh at every attention call from its own arguments, so a re-run (activation
        # checkpointing) sees the same call.
        call = read_attention_call(self.site.layer, args, kwargs)
        self.__dict__["call"] = call  # a plain attribute: nn.Module.__setattr__'s checks cost more than the hook itself
        return self.on_attention_call(call, args, kwargs)

    def on_attention_call(self, call: AttentionCall, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """With the ``"attention_call"`` hook: act on the attention module's arguments (None: leave them)."""
        return None

    def detach(self) -> None:
        """Remove every hook this holder registered."""
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()

    @property
    def is_attached(self) -> bool:
        return bool(self._hook_handles)

    # -- adapters -------------------------------------------------------------------------------
    def update_layer(self, adapter_name: str, heads: list[int], config) -> None:
        """Create ``adapter_name``'s parameters for ``heads`` (query-head indices of this layer)."""
        self.head_index[adapter_name] = torch.tensor(sorted(heads), dtype=torch.long, device=self._device())
        self.create_parameters(adapter_name, len(heads), config)
        self.set_adapter(self.active_adapters)

    def create_parameters(self, adapter_name: str, num_selected: int, config) -> None:
        raise NotImplementedError

    @classmethod
    def state_names(cls, config) -> tuple[set[str], set[str]]:
        """Names of the tensors a saved adapter holds per layer: (required, optional)."""
        return set(cls.adapter_layer_names), set()

    def applied_adapters(self) -> list[str]:
        """Active adapters of this layer that are not merged into the weights, in application order."""
        if self.disable_adapters:
            return []
        return [a for a in self.active_adapters if a in self.head_index and a not in self.merged_adapters]

    def acts_on_call(self) -> bool:
        """Whether ``edit_heads`` changes anything in the call in progress (False skips the head-output hook;
        e.g. soft injection acts on the prefill only)."""
        return True

    def edit_heads(self, heads: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """The method's math: ``heads`` is the fp32 ``(B, T, H, d)`` view of the head outputs."""
        raise NotImplementedError

    def regularization(self, adapter_name: str) -> torch.Tensor | None:
        """A term the wrapped model adds to its loss (e.g. an L1 penalty), or None."""
        return None

    def _edited_heads(self, x: torch.Tensor, adapters: list[str]) -> torch.Tensor:
        heads = x.unflatten(-1, (self.num_heads, self.head_dim))  # (B, T, H, d)
        if heads.dtype != torch.float32:  # (a no-op .float() is still a dispatch, on every call of every layer)
            heads = heads.float()
        for name in adapters:
            heads = self.edit_heads(heads, name)
        return heads.flatten(-2)  # (B, T, H*d) fp32

    def _takes_fp32_path(self, module: nn.Module, x: torch.Tensor) -> bool:
        return x.dtype in LOW_PRECISION and _is_plain_projection(module)

    # The two hooks run on every call of every adapted layer: the cheapest checks come first.
    def _edit_output_input(self, module: nn.Module, args: tuple) -> tuple | None:
        x = args[0]
        if self._takes_fp32_path(module, x) or not self.acts_on_call():
            return None
        adapters = self.applied_adapters()
        if not adapters:
            return None
        edited = self._edited_heads(x, adapters)
        return (edited if edited.dtype == x.dtype else edited.to(x.dtype), *args[1:])

    def _recompute_low_precision_output(self, module: nn.Module, args: tuple, output: torch.Tensor):
        x = args[0]
        if not self._takes_fp32_path(module, x) or not self.acts_on_call():
            return None
        adapters = self.applied_adapters()
        if not adapters:
            return None
        return _project(module, self._edited_heads(x, adapters)).to(output.dtype)

    def _device(self) -> torch.device:
        weight = getattr(self.site.output, "weight", None)
        if weight is None or weight.device.type == "meta":
            return torch.device("cpu")
        return weight.device

    def new_parameter(self, rows: int, std: float) -> nn.Parameter:
        """An fp32 (rows, head_dim) parameter drawn from N(0, std^2); zeros when std is 0."""
        data = torch.zeros(rows, self.head_dim, dtype=torch.float32, device=self._device())
        if std:
            data.normal_(0.0, std)
        return nn.Parameter(data)

    def full_head_tensor(self, values: torch.Tensor, adapter_name: str, fill: float) -> torch.Tensor:
        """(H, ...) tensor with the adapter's per-head ``values`` (n_selected, ...) at its heads and
        ``fill`` elsewhere (differentiable)."""
        index = self.head_index[adapter_name]
        if index.numel() == self.num_heads:  # all heads: index is 0..H-1
            return values
        base = values.new_full((self.num_heads, *values.shape[1:]), fill)
        return base.index_copy(0, index, values)

    # -- merging: only where the math allows --------------------------------------------------
    def check_mergeable(self) -> None:
        """Raise before any weight changes if this holder cannot merge."""
        raise TypeError(f"{type(self).__name__} cannot be merged into the model's weights")

    def merge_order(self, adapter_names: list[str] | None) -> list[str]:
        """The adapters a merge folds, in folding order (methods that merge override this)."""
        raise TypeError(f"{type(self).__name__} cannot be merged into the model's weights")

    def check_finite(self, adapter_names: list[str] | None) -> None:
        """Raise ``ValueError`` naming the adapter and layer if a weight to be merged is NaN / inf."""
        raise TypeError(f"{type(self).__name__} cannot be merged into the model's weights")

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise TypeError(f"{type(self).__name__} cannot be merged into the model's weights")

    def unmerge(self) -> None:
        raise TypeError(f"{type(self).__name__} cannot be merged into the model's weights")

    def extra_repr(self) -> str:
        return f"layer={self.site.layer}, heads={self.num_heads}, head_dim={self.head_dim}"
