"""HeadLayer: one method's per-head parameters for one decoder layer, applied through the site hooks.

A holder is a PEFT tuner layer (so PEFT saves, freezes, switches and deletes its parameters) that
hangs off the layer's attention module. It never wraps or replaces a model module: it registers
itself as an edit of its site (:mod:`headwise.hooks`), which hands it each attention call. A holder
keeps parameters and configuration only; everything about a call arrives as an argument.

The method contract (a method implements only these; ``docs/extending.md`` builds one from zero):

- ``adapter_layer_names``: its trainable per-adapter ``ParameterDict`` attributes (names start with the
  method's prefix); ``other_param_names``: its per-adapter buffers (``BufferDict``) and settings.
  What a saved adapter holds is read off these containers, buffers included.
- ``create_parameters(adapter_name, num_selected, config)``: fill them for one adapter (any device:
  the base moves them next to the layer's weights).
- ``edit_heads(heads, adapter_name, call)``: the math on the fp32 ``(B, T, H, d)`` head outputs, and /
  or ``edit_mask(mask, adapter_name, call)``: a new additive attention mask. ``acts_on(call)`` may skip
  calls (soft injection acts on the prefill only).
- optional ``gain_and_shift(adapter_name)``: the edit as ``z -> gain * z + shift``; a method that has
  it merges and unmerges exactly (the base folds it and restores the saved columns).
- optional ``regularization(adapter_name)``: a term added to the model's loss (LoFiT's L1).
- optional, for fast mixed batches (``adapter_names=``, one adapter per row): ``row_tensors(adapter_name)``,
  the adapter's per-head tensors at full head count (``{key: (H, ...)}``), ``row_identity()``, the same keys
  for rows without it, and ``edit_heads_rows(heads, tensors, call)`` / ``edit_mask_rows(mask, tensors, call)``,
  the math with a leading batch dimension on every tensor. The base stacks the batch's adapters into a bank
  and gathers each row's tensors with one index. Without them a mixed batch runs the method once per
  distinct adapter of the batch on its rows (exact, slower).
"""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from .calls import AttentionCall
from .compat import BufferDict, tensor_version
from .hooks import SiteEdit, add_edit, edits_at, remove_edit
from .merging import check_plain_projection, fold_into_projection
from .mixed import BASE, RowAdapters
from .sites import HeadSite

__all__ = ["HeadLayer"]


class HeadLayer(nn.Module, BaseTunerLayer, SiteEdit):
    """Base holder: see the module docstring for what a method implements."""

    adapter_layer_names: tuple[str, ...] = ()
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
        self._folded: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]] = []  # merge records
        self._banks: dict[tuple, dict[str, torch.Tensor]] = {}  # mixed batches: stacked row tensors, by adapters and versions

    # -- the method contract (see the module docstring) -------------------------------------------
    def create_parameters(self, adapter_name: str, num_selected: int, config) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement create_parameters()")

    def edit_heads(self, heads: torch.Tensor, adapter_name: str, call: AttentionCall | None) -> torch.Tensor:
        """The method's math on the fp32 ``(B, T, H, d)`` head outputs of one call."""
        raise NotImplementedError

    def edit_mask(self, mask: torch.Tensor | None, adapter_name: str, call: AttentionCall) -> torch.Tensor | None:
        """A new additive mask for this call (``mask``: an earlier edit's, or None for the call's own)."""
        raise NotImplementedError

    def acts_on(self, call: AttentionCall | None) -> bool:
        """Whether ``edit_heads`` changes anything in this call (False skips the head-output work)."""
        return True

    def gain_and_shift(self, adapter_name: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The edit as ``z -> gain * z + shift``: ``(H, d)`` or ``(H, 1)`` tensors (None = identity).
        Methods that define it can merge."""
        raise NotImplementedError

    def merge_refusal(self, adapter_name: str) -> str | None:
        """Why ``adapter_name`` cannot be merged into the weights (None: it can)."""
        if not self._defines("gain_and_shift"):
            return (f"{type(self).__name__.removesuffix('Layer')} cannot be merged into the model's weights: its edit is not "
                    "an affine map of the head outputs. Keep the adapter attached, or save it with save_pretrained().")
        return None

    def regularization(self, adapter_name: str) -> torch.Tensor | None:
        """A term the wrapped model adds to its loss (e.g. an L1 penalty), or None."""
        return None

    @classmethod
    def head_quantity(cls, saved: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str, bool]:
        """One number per selected head of a layer from its saved tensors ``{name: (n_selected, ...)}``, for
        ``headwise inspect``: ``(values, what they are with their unit, signed)``. Default: the L2 norm of
        the trained values; a method overrides it with the quantity that matters."""
        rows = [saved[name].float().reshape(len(saved[name]), -1) for name in cls.adapter_layer_names if name in saved]
        return torch.cat(rows, dim=1).norm(dim=1), "L2 norm of the trained values", False

    def row_tensors(self, adapter_name: str) -> dict[str, torch.Tensor] | None:
        """Fast mixed batches: ``adapter_name``'s per-head tensors ``{key: (H, ...)}`` (None: no fast path
        for this adapter, e.g. a gate at chosen positions)."""
        return None

    def row_identity(self) -> dict[str, torch.Tensor]:
        """Fast mixed batches: the tensors of a row this holder leaves unchanged (same keys and shapes)."""
        raise NotImplementedError

    def edit_heads_rows(self, heads: torch.Tensor, tensors: dict[str, torch.Tensor], call: AttentionCall) -> torch.Tensor:
        """Fast mixed batches: ``edit_heads`` with every tensor of ``tensors`` given per row ``(B, H, ...)``."""
        raise NotImplementedError

    def edit_mask_rows(self, mask: torch.Tensor | None, tensors: dict[str, torch.Tensor], call: AttentionCall) -> torch.Tensor:
        """Fast mixed batches: ``edit_mask`` with every tensor of ``tensors`` given per row ``(B, H, ...)``."""
        raise NotImplementedError

    @classmethod
    def _defines(cls, name: str) -> bool:
        return getattr(cls, name) is not getattr(HeadLayer, name)

    # -- helpers for methods ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the layer's output projection lives (and so this holder's tensors)."""
        weight = getattr(self.site.output, "weight", None)
        if weight is None or weight.device.type == "meta":
            return torch.device("cpu")
        return weight.device

    def new_parameter(self, rows: int, std: float) -> nn.Parameter:
        """An fp32 (rows, head_dim) parameter drawn from N(0, std^2); zeros when std is 0."""
        data = torch.zeros(rows, self.head_dim, dtype=torch.float32, device=self.device)
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

    # -- attach / detach --------------------------------------------------------------------------
    def attach(self) -> None:
        """Register this holder as an edit of its site."""
        add_edit(self.site, self)

    def detach(self) -> None:
        remove_edit(self.site, self)

    @property
    def is_attached(self) -> bool:
        return any(edit is self for edit in edits_at(self.site))

    def site_roles(self) -> set[str]:
        roles = set()
        if self._defines("edit_heads"):
            roles.add("heads")
        if self._defines("edit_mask"):
            roles.add("mask")
        return roles

    # -- adapters ---------------------------------------------------------------------------------
    def update_layer(self, adapter_name: str, heads: list[int], config) -> None:
        """Create ``adapter_name``'s parameters for ``heads`` (query-head indices of this layer)."""
        self.head_index[adapter_name] = torch.tensor(sorted(heads), dtype=torch.long)
        self.create_parameters(adapter_name, len(heads), config)
        self._move_adapter(adapter_name, self.device)  # the method may create its tensors anywhere
        self.set_adapter(self.active_adapters)

    def adapter_tensors(self, adapter_name: str) -> list[tuple[str, torch.Tensor]]:
        """(attribute, tensor) of every parameter and buffer ``adapter_name`` owns on this holder."""
        found = []
        for attribute in (*self.adapter_layer_names, *self.other_param_names):
            container = getattr(self, attribute, None)  # ParameterDict / BufferDict (settings dicts hold no tensors)
            tensor = container[adapter_name] if hasattr(container, "keys") and adapter_name in container else None
            if isinstance(tensor, torch.Tensor):
                found.append((attribute, tensor))
        return found

    def _move_adapter(self, adapter_name: str, device: torch.device) -> None:
        """Put ``adapter_name``'s tensors beside the layer's weights; the other adapters' are not walked, so
        adding the thousandth adapter costs what adding the first did."""
        for attribute, tensor in self.adapter_tensors(adapter_name):
            if tensor.device == device:
                continue
            if isinstance(tensor, nn.Parameter):
                moved = nn.Parameter(tensor.detach().to(device), requires_grad=tensor.requires_grad)
            else:
                moved = tensor.to(device)
            getattr(self, attribute)[adapter_name] = moved

    def applied_adapters(self) -> list[str]:
        """Active adapters of this layer that are not merged into the weights, in application order."""
        if self._disable_adapters:
            return []
        active = self._active_adapter
        names = [active] if isinstance(active, str) else active
        return [a for a in names if a in self.head_index and a not in self.merged_adapters]

    # -- SiteEdit: what the site hooks call -------------------------------------------------------
    def applies_to(self, call: AttentionCall | None) -> bool:
        if call is not None and call.rows is not None:
            return self.acts_on(call) and bool(self._row_adapters(call.rows))
        return self.acts_on(call) and bool(self.applied_adapters())

    def apply_heads(self, heads: torch.Tensor, call: AttentionCall | None) -> torch.Tensor:
        if call is not None and call.rows is not None:
            return self._apply_rows(heads, call, "heads")
        for name in self.applied_adapters():
            heads = self.edit_heads(heads, name, call)
        return heads

    def apply_mask(self, mask: torch.Tensor | None, call: AttentionCall) -> torch.Tensor | None:
        if call.rows is not None:
            return self._apply_rows(mask, call, "mask") if self._row_adapters(call.rows) else mask
        for name in self.applied_adapters():
            new = self.edit_mask(mask, name, call)
            if new is not None:
                mask = new
        return mask

    # -- mixed batches: one adapter per row ---------------------------------------------------------
    def _row_adapters(self, rows: RowAdapters) -> list[str]:
        """The batch's adapters this holder acts for (none while adapters are disabled)."""
        if self._disable_adapters:
            return []
        return [name for name in rows.distinct if name != BASE and name in self.head_index]

    def _apply_rows(self, value: torch.Tensor | None, call: AttentionCall, kind: str) -> torch.Tensor | None:
        """``value`` (head outputs or mask) with each row edited by its own adapter."""
        rows = call.rows
        bank = self._bank(rows) if self._fast_rows(kind) else None
        if bank is not None:
            device = value.device if value is not None else call.hidden_states.device
            slots = rows.slots(device)
            gathered = {key: stacked.index_select(0, slots) for key, stacked in bank.items()}  # (B, H, ...)
            if kind == "heads":
                return self.edit_heads_rows(value, gathered, call)
            return self.edit_mask_rows(value, gathered, call)
        return self._apply_rows_per_adapter(value, call, kind)

    def _fast_rows(self, kind: str) -> bool:
        return self._defines("row_tensors") and self._defines("edit_heads_rows" if kind == "heads" else "edit_mask_rows")

    def _bank(self, rows: RowAdapters) -> dict[str, torch.Tensor] | None:
        """``{key: (n_distinct, H, ...)}``: the batch's distinct adapters' row tensors stacked, the identity for
        ``__base__`` and for adapters this layer does not hold. Kept while none of those adapters' tensors
        changes (read only for the batch's adapters, never for all loaded); built fresh under autograd."""
        key = tuple((name, self._versions(name)) for name in rows.distinct)
        bank = self._banks.get(key)
        if bank is not None:
            return bank
        entries = []
        for name in rows.distinct:
            entry = self.row_tensors(name) if name in self.head_index else None
            if entry is None and name in self.head_index:
                return None  # an adapter without a fast path (e.g. a gate at chosen positions)
            entries.append(entry if entry is not None else self.row_identity())
        bank = {k: torch.stack([entry[k] for entry in entries]) for k in entries[0]}
        if not torch.is_grad_enabled():
            if len(self._banks) >= 16:
                self._banks.pop(next(iter(self._banks)))
            self._banks[key] = bank
        return bank

    def _versions(self, name: str) -> tuple:
        """Identity and version of every tensor ``name`` owns here: a bank built from them is current while these hold."""
        if name not in self.head_index:
            return ()
        return tuple((attribute, id(tensor), tensor_version(tensor), tensor.device)
                     for attribute, tensor in self.adapter_tensors(name))

    def _apply_rows_per_adapter(self, value: torch.Tensor | None, call: AttentionCall, kind: str) -> torch.Tensor | None:
        """The plain path: the method once per distinct adapter of the batch, on that adapter's rows."""
        rows = call.rows
        if kind == "mask" and value is None:
            value = call.masks(call.hidden_states.dtype if call.hidden_states.dtype.is_floating_point else torch.float32)[1]
        out = None
        for name in self._row_adapters(rows):
            index = rows.rows_of(name, value.device)
            part = value.index_select(0, index) if value.shape[0] == call.batch else value
            sub_call = call.select_rows(index)
            edited = self.edit_heads(part, name, sub_call) if kind == "heads" else self.edit_mask(part, name, sub_call)
            if out is None:
                shape = torch.broadcast_shapes(value.shape, (call.batch, *edited.shape[1:]))
                out = value.expand(shape).clone()
            out[index] = edited.to(out.dtype).expand(len(index), *out.shape[1:])
        return value if out is None else out

    # -- merging: from gain_and_shift, where the math allows ------------------------------------
    def merge_order(self, adapter_names: list[str] | None) -> list[str]:
        """The adapters a merge folds, last applied first (folding puts an edit in front of the projection).
        Named adapters are merged whether active or not (PEFT's contract); by default the active ones."""
        names = check_adapters_to_merge(self, adapter_names)
        ordered = [n for n in self.active_adapters if n in names] + [n for n in names if n not in self.active_adapters]
        return list(reversed([n for n in ordered if n in self.head_index]))

    def check_mergeable(self, adapter_names: list[str] | None = None) -> None:
        """Raise before any weight changes if this holder cannot merge these adapters."""
        for name in self.merge_order(adapter_names):
            reason = self.merge_refusal(name)
            if reason:
                raise TypeError(reason)
        check_plain_projection(self.site)

    def _flat_affine(self, name: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(H*d,) fp32 gain and shift: the fold is done in fp32 even after the model was cast to fp16 / bf16."""
        with torch.no_grad():
            gain, shift = self.gain_and_shift(name)
        shape = (self.num_heads, self.head_dim)
        return tuple(None if t is None else t.float().expand(shape).flatten() for t in (gain, shift))

    def check_finite(self, adapter_names: list[str] | None) -> None:
        """Raise ``ValueError`` naming the adapter and layer if a weight to be merged is NaN / inf."""
        for name in self.merge_order(adapter_names):
            if any(t is not None and not torch.isfinite(t).all() for t in self._flat_affine(name)):
                raise ValueError(
                    f"NaNs detected in the merged weights. The adapter {name!r} seems to be broken: its weights in "
                    f"layer {self.site.layer} hold NaN or inf. Nothing was merged."
                )

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        names = self.merge_order(adapter_names)
        self.check_mergeable(adapter_names)
        if safe_merge:
            self.check_finite(adapter_names)
        module = self.site.output
        conv = type(module).__name__ == "Conv1D"
        for name in names:
            gain, shift = self._flat_affine(name)
            index = self.head_index[name].to(module.weight.device)
            columns = (index[:, None] * self.head_dim + torch.arange(self.head_dim, device=index.device)).flatten()
            kept = (module.weight[columns] if conv else module.weight[:, columns]).detach().clone()
            bias = None if module.bias is None else module.bias.detach().clone()
            created = fold_into_projection(self.site, gain, shift)
            self._folded.append((columns, kept, bias, created))
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Restore the folded columns and bias exactly (a gain of 0 cannot be divided out)."""
        module = self.site.output
        conv = type(module).__name__ == "Conv1D"
        with torch.no_grad():
            while self.merged_adapters:
                self.merged_adapters.pop()
                columns, kept, bias, created = self._folded.pop()
                if conv:
                    module.weight[columns] = kept
                else:
                    module.weight[:, columns] = kept
                if created:
                    module.bias = None
                elif bias is not None:
                    module.bias.copy_(bias)

    @property
    def created_bias(self) -> bool:
        """Whether a merge gave the output projection a bias it did not have."""
        return any(record[3] for record in self._folded)

    def extra_repr(self) -> str:
        return f"layer={self.site.layer}, heads={self.num_heads}, head_dim={self.head_dim}"
