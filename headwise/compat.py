"""Every private internal of PEFT, transformers, bitsandbytes and torch that headwise uses, in one place.

headwise leans on a few names its dependencies do not promise to keep (PEFT's method tables and
``BufferDict``, the tuner methods PEFT's own tuners override, torch's hook dictionaries, transformers'
``config._attn_implementation``, a bitsandbytes repacking function). Library code reads them only
through this module, which checks on import (or, for the optional bitsandbytes, on first use) that each
one still exists, and otherwise raises :class:`CompatibilityError` naming the internal, the installed
version and the range headwise is tested with. A new release that drops one then fails at
``import headwise`` with that message instead of misbehaving later.

``TESTED`` is the tested range of each dependency; ``pyproject.toml`` pins the same ranges (a test
keeps them equal). Importing this module also imports PEFT without bitsandbytes (see
:func:`import_peft_quietly`), so it is the first thing ``headwise`` imports.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BufferDict", "CompatibilityError", "HOOK_DICTS", "PEFT_METHOD_TABLES", "PeftMethodTables", "TESTED",
    "attn_implementation", "check_internals", "child_modules", "hook_dicts", "import_peft_quietly", "missing",
    "name_or_path", "peft_method_tables", "set_attn_implementation", "set_name_or_path", "tensor_version",
    "unpack_cpu_4bit_weight",
]

# The ranges headwise is tested with, as pip specifiers (pyproject.toml pins the same; tests/test_registry.py checks).
# peft: registration writes PEFT's method tables (PEFT_METHOD_TABLES below), which PEFT may change in any release.
TESTED = {
    "peft": ">=0.21,<0.22",
    "transformers": ">=5.0,<6",
    "torch": ">=2.4",
    "bitsandbytes": ">=0.45",
}


class CompatibilityError(ImportError):
    """An installed dependency lacks an internal headwise uses: install a version in the tested range."""


def installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def missing(package: str, internal: str) -> CompatibilityError:
    """The error for an internal of ``package`` that the installed version does not have."""
    tested = TESTED[package]
    return CompatibilityError(
        f"headwise uses {internal}, which {package} {installed_version(package)} does not have; headwise is tested "
        f"with {package}{tested}: pip install '{package}{tested}'"
    )


def _require(owner: Any, names: tuple[str, ...], package: str, where: str) -> None:
    for name in names:
        if not hasattr(owner, name):
            raise missing(package, f"{where}.{name}")


# -- importing PEFT without bitsandbytes -----------------------------------------------------------
# ``peft.helpers`` imports bitsandbytes at import time when it is installed; bitsandbytes then loads its
# kernels and logs a warning on CPU machines. We import PEFT with bitsandbytes hidden and hand
# ``peft.helpers`` a module that imports bitsandbytes on first use, so PEFT behaves exactly as before.
BITSANDBYTES = "bitsandbytes"


class _ImportOnFirstUse(types.ModuleType):
    """Stands in for a module and imports it the first time an attribute is read."""

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self.__name__), attribute)


def _clear_availability_caches() -> None:
    """PEFT and transformers cache "is bitsandbytes installed" answers; drop any taken while it was hidden."""
    import peft.import_utils
    import transformers.utils.import_utils as transformers_imports

    for module in (peft.import_utils, transformers_imports):
        for name in dir(module):
            function = getattr(module, name)
            if ("bnb" in name or BITSANDBYTES in name) and hasattr(function, "cache_clear"):
                function.cache_clear()


def import_peft_quietly() -> None:
    """Import ``peft`` (once); bitsandbytes is imported only when something uses it."""
    if "peft" in sys.modules or BITSANDBYTES in sys.modules or importlib.util.find_spec(BITSANDBYTES) is None:
        import peft  # noqa: F401
        return
    import transformers  # noqa: F401  (imported outside the hidden window: its own checks stay true)

    sys.modules[BITSANDBYTES] = None  # an import of it raises ImportError while hidden
    try:
        import peft.helpers
    finally:
        if sys.modules.get(BITSANDBYTES, 0) is None:
            del sys.modules[BITSANDBYTES]
    _clear_availability_caches()
    if getattr(peft.helpers, "bnb", 0) is None:
        peft.helpers.bnb = _ImportOnFirstUse(BITSANDBYTES)


import_peft_quietly()

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer  # noqa: E402
from torch import nn  # noqa: E402
from transformers import PretrainedConfig, PreTrainedModel  # noqa: E402

# -- PEFT ----------------------------------------------------------------------------------------------
try:
    from peft.tuners._buffer_dict import BufferDict
except ImportError as error:  # pragma: no cover - only with an untested PEFT
    raise missing("peft", "peft.tuners._buffer_dict.BufferDict") from error

# PEFT's registry: register_peft_method() only accepts names of PEFT's closed PeftType enum, so headwise
# writes its methods into these tables itself (headwise.registry).
PEFT_METHOD_TABLES = ("PEFT_TYPE_TO_CONFIG_MAPPING", "PEFT_TYPE_TO_TUNER_MAPPING", "PEFT_TYPE_TO_PREFIX_MAPPING")

# BaseTuner / BaseTunerLayer internals that headwise's tuner and holders override or set.
PEFT_TUNER_INTERNALS = (
    "_prepare_adapter_config", "_create_and_replace", "_check_new_adapter_config", "_mark_only_adapters_as_trainable",
    "_check_merge_allowed", "_unload_and_optionally_merge",
)
PEFT_LAYER_INTERNALS = ("_disable_adapters", "_active_adapter")
# PeftModel calls the tuner's method of this name, when it has one, around every forward / generate
# (HeadTuner uses it for per-row adapters, ``adapter_names=``).
PEFT_MODEL_INTERNALS = ("_enable_peft_forward_hooks",)


@dataclass(frozen=True)
class PeftMethodTables:
    config: dict  # method name -> config class
    tuner: dict  # method name -> tuner class
    prefix: dict  # method name -> parameter-name prefix


def peft_method_tables() -> PeftMethodTables:
    """PEFT's method tables (``peft.mapping``), checked to be there."""
    from peft import mapping

    tables = []
    for name in PEFT_METHOD_TABLES:
        table = getattr(mapping, name, None)
        if not isinstance(table, dict):
            raise missing("peft", f"peft.mapping.{name} (a dict)")
        tables.append(table)
    return PeftMethodTables(*tables)


# -- torch ---------------------------------------------------------------------------------------------
HOOK_DICTS = (
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called", "_backward_hooks", "_backward_pre_hooks",
)


def child_modules(module: nn.Module) -> dict[str, nn.Module | None]:
    """``module``'s own children by name: torch's ``_modules`` dict itself (editing it edits the module)."""
    return module._modules


def hook_dicts(module: nn.Module) -> dict[str, dict]:
    """``module``'s hook tables (torch's ``_forward_pre_hooks`` and the rest) by name, the dicts themselves."""
    return {name: getattr(module, name) for name in HOOK_DICTS}


def tensor_version(tensor: torch.Tensor) -> int:
    """torch's in-place edit counter of ``tensor`` (``-1`` for inference tensors, which cannot be edited)."""
    return -1 if tensor.is_inference() else tensor._version


# -- transformers --------------------------------------------------------------------------------------
PRETRAINED_MODEL_INTERNALS = ("_init_weights", "_supports_attention_backend")  # what a custom model class sets


def attn_implementation(config: Any) -> str | None:
    """The attention implementation a model's config selects (``"eager"``, ``"sdpa"``, ...), or None."""
    return getattr(config, "_attn_implementation", None)


def set_attn_implementation(config: Any, name: str) -> None:
    config._attn_implementation = name


def name_or_path(config: Any) -> str | None:
    """The checkpoint name or folder a model's config was loaded from (transformers' ``_name_or_path``)."""
    if isinstance(config, PretrainedConfig) and "_name_or_path" not in vars(config):
        raise missing("transformers", "PretrainedConfig._name_or_path")
    return getattr(config, "_name_or_path", None)


def set_name_or_path(config: Any, value: str) -> None:
    config._name_or_path = value


# -- bitsandbytes (optional: checked when used) ---------------------------------------------------------
def unpack_cpu_4bit_weight(data: torch.Tensor, quant_state: Any) -> tuple[torch.Tensor, Any]:
    """Undo bitsandbytes' CPU inference packing of a 4-bit weight: ``(data, quant_state)`` in the standard format."""
    try:
        from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse
    except ImportError as error:
        raise missing("bitsandbytes", "bitsandbytes.nn.modules._convert_weight_packed_for_cpu_inverse") from error
    return _convert_weight_packed_for_cpu_inverse(data, quant_state)


def check_internals() -> None:
    """Raise :class:`CompatibilityError` if an internal of PEFT, torch or transformers is gone (run on import)."""
    peft_method_tables()
    _require(BaseTuner, PEFT_TUNER_INTERNALS, "peft", "peft.tuners.tuners_utils.BaseTuner")
    _require(BaseTunerLayer, PEFT_LAYER_INTERNALS, "peft", "peft.tuners.tuners_utils.BaseTunerLayer")
    _require(PeftModel, PEFT_MODEL_INTERNALS, "peft", "peft.PeftModel")
    _require(nn.Module(), ("_modules", *HOOK_DICTS), "torch", "torch.nn.Module()")
    _require(torch.Tensor, ("_version",), "torch", "torch.Tensor")
    _require(PretrainedConfig, ("_attn_implementation",), "transformers", "transformers.PretrainedConfig")
    _require(PreTrainedModel, PRETRAINED_MODEL_INTERNALS, "transformers", "transformers.PreTrainedModel")


check_internals()
