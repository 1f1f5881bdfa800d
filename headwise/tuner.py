"""HeadTuner: the PEFT tuner shared by all headwise methods.

PEFT's tuners replace target modules with wrappers; ours leaves the model's modules alone. It finds
the head sites, hangs one holder per adapted layer off the attention module, and the holders edit
activations through hooks. ``unload()`` detaches every hook and removes every holder.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable

import torch
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from .adapter import HeadLayer
from .compat import child_modules, name_or_path
from .config import AdapterConfig
from .heads import group_by_layer
from .merging import make_bias_loadable
from .mixed import BASE, rows_of_adapters
from .sites import HeadSite, find_head_sites
from .quantized import four_bit_modules, unpack_for_training
from .transaction import unchanged_on_error

__all__ = ["HeadTuner"]

logger = logging.getLogger(__name__)


class HeadTuner(BaseTuner):
    """Subclasses declare ``prefix`` (their parameters' name prefix, e.g. "lofit_") and ``tuner_layer_cls``
    (their :class:`HeadLayer`); ``headwise.register_method`` checks both."""

    prefix: str = "headwise_"
    tuner_layer_cls: type[HeadLayer] = HeadLayer
    target_module_mapping: dict[str, list[str]] = {}

    # -- injection ------------------------------------------------------------------------------
    @property
    def holder_name(self) -> str:
        """Attribute name of this method's holder on each attention module."""
        return "headwise_" + self.prefix.rstrip("_")

    def _prepare_adapter_config(self, peft_config: AdapterConfig, model_config: dict) -> AdapterConfig:
        return peft_config

    def _create_and_replace(self, *args, **kwargs) -> None:  # PEFT's module-replacement path is not used
        raise NotImplementedError("headwise adapters attach holders in inject_adapter()")

    def check_sites(self, config: AdapterConfig, sites: list[HeadSite]) -> None:
        """Method-specific checks before anything is attached (e.g. the attention implementation)."""

    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        with unchanged_on_error(model):
            self._inject(model, adapter_name)

    def _inject(self, model: nn.Module, adapter_name: str) -> None:
        config: AdapterConfig = self.peft_config[adapter_name]
        # Every check runs before the model is touched; anything that fails later is rolled back.
        sites = find_head_sites(model, config.site_template)
        first = sites[0]
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        config.check_shape(model_type, len(sites), first.num_heads, first.head_dim)
        heads = config.resolve_heads(len(sites), first.num_heads)
        self._check_new_adapter_config(config)
        self.check_sites(config, sites)
        for site in sites:
            holder = getattr(site.attention, self.holder_name, None)
            if holder is not None and adapter_name in holder.head_index:
                raise ValueError(
                    f"an adapter named {adapter_name!r} is already attached to layer {site.layer}; "
                    "unload() the model first or pick another adapter_name"
                )

        by_layer = group_by_layer(heads)
        for site in sites:
            if site.layer not in by_layer:
                continue
            holder = getattr(site.attention, self.holder_name, None)
            if holder is None:
                holder = self.tuner_layer_cls(site)
                site.attention.add_module(self.holder_name, holder)
                holder.attach()
            holder.update_layer(adapter_name, by_layer[site.layer], config)
            self.targeted_module_names.append(f"{site.attention_name}.{self.holder_name}")

        config.record_shape(model_type, len(sites), first.num_heads, first.head_dim)
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = name_or_path(getattr(model, "config", None)) or None
        self._four_bit = four_bit_modules(model)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)
        self._mark_only_adapters_as_trainable(model)
        if config.inference_mode:
            for holder in self.holders():
                holder.set_adapter(holder.active_adapters, inference_mode=True)

    def holders(self) -> list[HeadLayer]:
        return [m for m in self.model.modules() if isinstance(m, self.tuner_layer_cls)]

    # -- per-head read / write: one walk over the holders for every method's helpers ------------
    def holders_of(self, adapter_name: str) -> list[HeadLayer]:
        """The holders that carry ``adapter_name``, or a ValueError naming the adapters there are."""
        holders = [h for h in self.holders() if adapter_name in h.head_index]
        if not holders:
            raise ValueError(
                f"no {self.prefix.rstrip('_')} adapter named {adapter_name!r} in this model "
                f"(it has {sorted(self.peft_config)})"
            )
        return holders

    def read_heads(self, adapter_name: str, rows: Callable[[HeadLayer], torch.Tensor], fill: float = 0.0) -> torch.Tensor:
        """An (L, H, ...) CPU tensor: ``rows(holder)`` gives each holder's (n_selected, ...) values, put at
        its heads; ``fill`` elsewhere."""
        holders = self.holders_of(adapter_name)
        config = self.peft_config[adapter_name]
        with torch.no_grad():
            parts = [(h, rows(h).detach().float().cpu()) for h in holders]
        out = torch.full((config.num_layers, config.num_heads, *parts[0][1].shape[1:]), fill)
        for holder, values in parts:
            out[holder.site.layer, holder.head_index[adapter_name].cpu()] = values
        return out

    def write_heads(self, adapter_name: str, values: torch.Tensor, write: Callable[[HeadLayer, torch.Tensor], None]) -> None:
        """Hand each holder its heads' rows of an (L, H, ...) tensor: ``write(holder, rows)`` with rows
        (n_selected, ...) on the holder's device. The shape is checked before anything is written."""
        holders = self.holders_of(adapter_name)
        config = self.peft_config[adapter_name]
        if tuple(values.shape[:2]) != (config.num_layers, config.num_heads):
            raise ValueError(
                f"per-head values have shape {tuple(values.shape)}; this adapter needs (layers, heads, ...)="
                f"({config.num_layers}, {config.num_heads}, ...)"
            )
        for holder in holders:
            index = holder.head_index[adapter_name]
            write(holder, values[holder.site.layer].to(index.device)[index])

    def _named_holders(self) -> list[tuple[nn.Module, str, HeadLayer]]:
        out = []
        for parent in self.model.modules():
            holder = child_modules(parent).get(self.holder_name)
            if isinstance(holder, self.tuner_layer_cls):
                out.append((parent, self.holder_name, holder))
        return out

    # -- forward: the loss includes adapter penalties, so plain Trainer optimises them ----------
    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any):
        """PEFT calls this around forward() and generate() with their keyword arguments: ``adapter_names``
        (one adapter per row, ``"__base__"`` for the bare model) holds for this call, in this thread only."""
        names = kwargs.get("adapter_names")
        if names is None:
            yield
            return
        self._check_adapter_names(names, kwargs)
        beams = kwargs.get("num_beams")
        if isinstance(beams, int) and beams > 1:  # generate repeats each row num_beams times
            names = [name for name in names for _ in range(beams)]
        with rows_of_adapters(names):
            yield

    def _check_adapter_names(self, names: Any, kwargs: dict) -> None:
        """PEFT's refusals for a mixed batch, before anything runs."""
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"adapter_names must be a list of adapter names, one per row, got {names!r}")
        if self.training:
            raise ValueError("Cannot pass `adapter_names` when the model is in training mode: call model.eval() first "
                             "(mixed batches are for inference)")
        unknown = sorted({name for name in names if name != BASE and name not in self.peft_config})
        if unknown:
            raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(unknown)}; this model has "
                             f"{', '.join(sorted(self.peft_config))} (and '{BASE}' for the bare model)")
        if any(holder.merged_adapters for holder in self.holders()):
            raise ValueError("Cannot pass `adapter_names` when there are merged adapters, please call unmerge_adapter first")
        inputs = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        if isinstance(inputs, torch.Tensor) and inputs.dim() >= 2 and len(names) != inputs.shape[0]:
            raise ValueError(f"Length of `adapter_names` should be the same as the number of inputs, but got "
                             f"{len(names)} and {inputs.shape[0]} respectively")

    def forward(self, *args: Any, **kwargs: Any):
        if torch.is_grad_enabled():
            unpack_for_training(self._four_bit)  # see headwise.quantized: a packed 4-bit weight passes no gradient
        outputs = self.model(*args, **kwargs)
        loss = getattr(outputs, "loss", None)
        if loss is not None:
            penalty = self.regularization()
            if penalty is not None:
                outputs.loss = loss + penalty.to(loss.dtype)
        return outputs

    def regularization(self) -> torch.Tensor | None:
        """Sum of the active adapters' penalty terms over all holders, or None."""
        terms = []
        for holder in self.holders():
            for name in holder.applied_adapters():
                term = holder.regularization(name)
                if term is not None:
                    terms.append(term)
        return torch.stack(terms).sum() if terms else None

    # -- unload / merge -------------------------------------------------------------------------
    def _check_mergeable_everywhere(self, holders: list[HeadLayer], safe_merge: bool, adapter_names) -> None:
        """Every check of every layer runs before any weight is folded."""
        if isinstance(adapter_names, str):
            raise TypeError(f"adapter_names must be a list of adapter names, got the string {adapter_names!r}")
        unknown = [name for name in adapter_names or [] if name not in self.peft_config]
        if unknown:
            raise ValueError(f"no adapter named {unknown[0]!r} to merge; this model has {sorted(self.peft_config)}")
        self._check_merge_allowed()
        for holder in holders:
            holder.check_mergeable(adapter_names)
            if safe_merge:
                holder.check_finite(adapter_names)

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        holders = self.holders()
        self._check_mergeable_everywhere(holders, safe_merge, adapter_names)
        for holder in holders:
            holder.merge(safe_merge=False, adapter_names=adapter_names)

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        named = self._named_holders()
        holders = [holder for _, _, holder in named]
        if merge:
            self._check_mergeable_everywhere(holders, safe_merge, adapter_names)
            for holder in holders:
                holder.merge(safe_merge=False, adapter_names=adapter_names)
            template = next(iter(self.peft_config.values())).site_template
            self.after_merge(self.model, holders, find_head_sites(self.model, template))
        else:
            # unload() gives the base model back: adapters merged earlier (merge_adapter) are unmerged first,
            # so the returned model is the original one and reloads as it was.
            for holder in holders:
                if holder.merged_adapters:
                    holder.unmerge()
        for parent, name, holder in named:
            holder.detach()
            delattr(parent, name)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        return self.model

    def after_merge(self, model: nn.Module, holders: list[HeadLayer], sites: list[HeadSite]) -> None:
        """Make the merged model a plain checkpoint: a bias created by the merge needs the config flag
        that makes a reloaded model have it."""
        if any(holder.created_bias for holder in holders):
            make_bias_loadable(model, sites)
