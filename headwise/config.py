"""AdapterConfig: the base of every headwise method's config (a PEFT config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from peft import PeftConfig

from .heads import HeadList, resolve_heads
from .registry import MethodName
from .version import __version__

__all__ = ["AdapterConfig", "AdapterShapeError"]

HeadsSpec = Union[str, list, None]


class AdapterShapeError(ValueError):
    """An adapter does not fit the model it is attached to."""


@dataclass
class AdapterConfig(PeftConfig):
    """Fields shared by all head-level adapters.

    ``method`` (the method's name) is set by ``headwise.register_method``. The model-shape fields are filled in
    when the adapter is first attached and checked on every later attach (e.g. when loading).
    """

    method: ClassVar[MethodName]

    heads: HeadsSpec = field(
        default="all",
        metadata={"help": "Heads to adapt: a list of (layer, head) pairs (query heads), or 'all'."},
    )
    layers: list[int] | None = field(
        default=None,
        metadata={"help": "With heads='all': only the heads of these layers. None means every layer."},
    )
    site_template: str | None = field(
        default=None,
        metadata={
            "help": "Module path of the attention output projection with '{layer}' for the layer index, "
            "e.g. 'model.layers.{layer}.self_attn.o_proj'. Overrides the architecture table."
        },
    )
    init_weights: bool = field(
        default=True,
        metadata={
            "help": "PEFT's meaning: True starts from the method's own initialisation (the identity, or the paper's "
            "near-identity noise); False draws random, clearly non-identity values (for tests)."
        },
    )
    model_type: str | None = field(default=None, metadata={"help": "Recorded: model_type of the base model."})
    num_layers: int | None = field(default=None, metadata={"help": "Recorded: decoder layers of the base model."})
    num_heads: int | None = field(default=None, metadata={"help": "Recorded: query heads per layer."})
    head_dim: int | None = field(default=None, metadata={"help": "Recorded: width of one head's output."})
    headwise_version: str = field(default=__version__, metadata={"help": "headwise version that wrote this."})

    def __post_init__(self):
        super().__post_init__()
        if getattr(type(self), "method", None) is None:
            raise TypeError(f"{type(self).__name__} is not registered: call headwise.register_method(name, "
                            f"{type(self).__name__}, YourTuner) before making configs")
        self.peft_type = self.method
        if self.task_type is None:
            self.task_type = "CAUSAL_LM"
        if not isinstance(self.init_weights, bool):
            raise ValueError(f"init_weights must be True or False, got {self.init_weights!r}")
        if isinstance(self.heads, str) and self.heads != "all":
            raise ValueError(f"heads must be a list of (layer, head) pairs or 'all', got {self.heads!r}")
        if isinstance(self.heads, (list, tuple)):
            self.heads = [_as_pair(h) for h in self.heads]
            if not self.heads:
                raise ValueError("heads is empty: name at least one (layer, head) pair, or 'all'")
        elif self.heads is not None and not isinstance(self.heads, str):
            raise ValueError(f"heads must be a list of (layer, head) pairs or 'all', got {type(self.heads).__name__}")
        if self.layers is not None:
            if self.heads != "all":
                raise ValueError("layers= selects whole layers and only goes with heads='all'")
            if not isinstance(self.layers, (list, tuple)) or not self.layers:
                raise ValueError(f"layers must be a non-empty list of layer indices (or None for every layer), got {self.layers!r}")
            self.layers = [_as_index(layer, "layer") for layer in self.layers]

    # -- model shape -------------------------------------------------------------------------
    def check_shape(self, model_type: str | None, num_layers: int, num_heads: int, head_dim: int) -> None:
        """Raise :class:`AdapterShapeError` if the recorded shape differs from this model's."""
        recorded = (self.num_layers, self.num_heads, self.head_dim)
        actual = (num_layers, num_heads, head_dim)
        if self.num_layers is not None and recorded != actual:
            raise AdapterShapeError(
                f"this {self.method.value} adapter was made for a model with (layers, heads, head_dim)="
                f"{recorded} (model_type={self.model_type!r}, base={self.base_model_name_or_path!r}); "
                f"the model given has {actual} (model_type={model_type!r}). Load it onto the base model "
                "it was trained on."
            )

    def record_shape(self, model_type: str | None, num_layers: int, num_heads: int, head_dim: int) -> None:
        self.model_type, self.num_layers, self.num_heads, self.head_dim = model_type, num_layers, num_heads, head_dim

    def resolve_heads(self, num_layers: int, num_heads: int) -> HeadList:
        """The (layer, head) pairs this adapter touches, sorted, checked against the model."""
        return resolve_heads(self.heads, num_layers, num_heads, layers=self.layers)

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["peft_type"] = self.method.value
        if isinstance(self.heads, list):
            out["heads"] = [list(h) for h in self.heads]
        return out

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """Write ``adapter_config.json`` and the model card (``headwise.card``)."""
        from .card import write_model_card

        super().save_pretrained(save_directory, **kwargs)
        write_model_card(save_directory, self)


def _as_index(value, what: str) -> int:
    """An integer index; a float, bool or string is refused rather than truncated."""
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 and not isinstance(value.item(), (bool, float)):
            return int(value.item())  # a 0-d integer tensor / numpy integer
        raise ValueError(f"{what} index must be an integer, got {value!r} ({type(value).__name__})")
    return value


def _as_pair(head) -> tuple[int, int]:
    if not isinstance(head, (list, tuple)) or len(head) != 2:
        raise ValueError(f"each head must be a (layer, head) pair, got {head!r}")
    return _as_index(head[0], "layer"), _as_index(head[1], "head")
