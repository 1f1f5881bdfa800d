"""HeadLayer: holds one method's per-head parameters for one decoder layer and applies them by hook.

A holder is a PEFT tuner layer (so PEFT saves, freezes, switches and deletes its parameters) that
hangs off the layer's attention module. It never wraps or replaces a model module: it registers a
forward pre-hook on the output projection and edits that projection's input, the concatenated
head outputs ``(B, T, H*d)``, viewed as ``(B, T, H, d)``. The edit is computed in fp32 and cast back.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .sites import HeadSite

__all__ = ["HeadLayer"]


class HeadLayer(nn.Module, BaseTunerLayer):
    """Base holder. Subclasses declare ``adapter_layer_names`` and implement ``update_layer`` and
    ``edit_heads``; hooks must be pure functions of their inputs and the parameters (activation
    checkpointing re-runs them)."""

    other_param_names: tuple[str, ...] = ("head_index",)

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

    # -- attach / detach ------------------------------------------------------------------------
    def attach(self) -> None:
        """Register this holder's hooks on the model."""
        if self._hook_handles:
            raise RuntimeError(f"the {type(self).__name__} of layer {self.site.layer} is already attached")
        self._hook_handles.append(self.site.output.register_forward_pre_hook(self._edit_output_input))

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

    def applied_adapters(self) -> list[str]:
        """Active adapters of this layer that are not merged into the weights, in application order."""
        if self.disable_adapters:
            return []
        return [a for a in self.active_adapters if a in self.head_index and a not in self.merged_adapters]

    def edit_heads(self, heads: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """The method's math: ``heads`` is the fp32 ``(B, T, H, d)`` view of the head outputs."""
        raise NotImplementedError

    def regularization(self, adapter_name: str) -> torch.Tensor | None:
        """A term the wrapped model adds to its loss (e.g. an L1 penalty), or None."""
        return None

    def _edit_output_input(self, module: nn.Module, args: tuple) -> tuple | None:
        adapters = self.applied_adapters()
        if not adapters:
            return None
        x = args[0]
        heads = x.unflatten(-1, (self.num_heads, self.head_dim)).float()  # (B, T, H, d)
        for name in adapters:
            heads = self.edit_heads(heads, name)
        return (heads.flatten(-2).to(x.dtype), *args[1:])

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
        """(H, d) tensor with ``values`` at the adapter's heads and ``fill`` elsewhere (differentiable)."""
        index = self.head_index[adapter_name]
        if index.numel() == self.num_heads:  # all heads: index is 0..H-1
            return values
        base = values.new_full((self.num_heads, self.head_dim), fill)
        return base.index_copy(0, index, values)

    # -- merging: only where the math allows --------------------------------------------------
    def check_mergeable(self) -> None:
        """Raise before any weight changes if this holder cannot merge."""
        raise TypeError(f"{type(self).__name__} cannot be merged into the model's weights")

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise TypeError(f"{type(self).__name__} cannot be merged into the model's weights")

    def unmerge(self) -> None:
        raise TypeError(f"{type(self).__name__} cannot be merged into the model's weights")

    def extra_repr(self) -> str:
        return f"layer={self.site.layer}, heads={self.num_heads}, head_dim={self.head_dim}"
