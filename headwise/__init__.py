"""headwise: attention-head-level adapters for HuggingFace transformers, PEFT-style.

The methods live in their own packages (``lofit``, ``soft_injection``, ``zerotuning``, ``interventions``,
or any other): importing one registers it with PEFT, so ``peft.get_peft_model``,
``PeftModel.from_pretrained`` and ``AutoPeftModelForCausalLM`` know it. headwise's own loaders
(``headwise.from_pretrained``, ``headwise.load_adapter_model``, the CLI) import the package of a saved
adapter's method themselves, through the ``headwise.methods`` entry points; ``headwise.load_methods()``
imports every installed one.
"""

from . import compat  # noqa: F401  (first: imports PEFT without bitsandbytes, and checks the internals headwise uses)
from .config import AdapterConfig, AdapterShapeError
from .heads import group_by_layer, resolve_heads
from .hub import push_to_hub
from .model import from_pretrained, get_adapter_model, trainable_parameters, wrap
from .many import adapter_memory, load_adapters
from .experiments.bundled import load_adapter_model, load_base_model, load_bundled_model
from .registry import MethodName, UnknownMethodError, load_methods, register_method, registered_methods
from .sites import ARCHITECTURES, HeadSite, UnsupportedArchitectureError, find_head_sites
from .version import __version__

__all__ = [
    "ARCHITECTURES",
    "AdapterConfig",
    "AdapterShapeError",
    "HeadSite",
    "MethodName",
    "UnknownMethodError",
    "UnsupportedArchitectureError",
    "__version__",
    "adapter_memory",
    "find_head_sites",
    "from_pretrained",
    "get_adapter_model",
    "group_by_layer",
    "load_adapter_model",
    "load_adapters",
    "load_base_model",
    "load_bundled_model",
    "load_methods",
    "push_to_hub",
    "register_method",
    "registered_methods",
    "resolve_heads",
    "trainable_parameters",
    "wrap",
]
