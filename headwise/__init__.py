"""headwise: attention-head-level adapters for HuggingFace transformers, PEFT-style.

Importing headwise registers its methods (LoFiT, ...) with PEFT, so ``peft.get_peft_model``,
``PeftModel.from_pretrained`` and ``AutoPeftModelForCausalLM`` know them.
"""

from . import _quiet_import  # noqa: F401  (first: imports PEFT without bitsandbytes)
from .config import AdapterConfig, AdapterShapeError
from .heads import group_by_layer, resolve_heads
from .hub import push_to_hub
from .model import from_pretrained, get_adapter_model, trainable_parameters, wrap
from .experiments.bundled import load_adapter_model, load_base_model, load_bundled_model
from .registry import HeadPeftType, MethodName, import_builtin_methods, register_method, registered_methods
from .sites import ARCHITECTURES, HeadSite, UnsupportedArchitectureError, find_head_sites
from .version import __version__

import_builtin_methods()

__all__ = [
    "ARCHITECTURES",
    "AdapterConfig",
    "AdapterShapeError",
    "HeadPeftType",
    "HeadSite",
    "MethodName",
    "UnsupportedArchitectureError",
    "__version__",
    "find_head_sites",
    "from_pretrained",
    "get_adapter_model",
    "group_by_layer",
    "load_adapter_model",
    "load_base_model",
    "load_bundled_model",
    "push_to_hub",
    "register_method",
    "registered_methods",
    "resolve_heads",
    "trainable_parameters",
    "wrap",
]


def __getattr__(name: str):
    """``headwise.models`` and the other moved modules, read as attributes, still work (with a warning)."""
    from ._deprecated import MOVED_MODULES

    if name in MOVED_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
