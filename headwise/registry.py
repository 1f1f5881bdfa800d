"""Registry of headwise methods, and their registration with PEFT.

PEFT's own ``register_peft_method`` only accepts names of its closed ``PeftType`` enum, so we put our
own str-Enum members into PEFT's four mapping tables. ``tests/test_registry.py`` fails loudly when
PEFT changes those tables.
"""

from __future__ import annotations

import enum
import importlib

__all__ = ["HeadPeftType", "register_method", "registered_methods", "import_builtin_methods"]

# Method packages shipped with headwise; imported (and so registered) when headwise is imported.
BUILTIN_METHOD_PACKAGES = ("lofit", "soft_injection", "zerotuning")


class HeadPeftType(str, enum.Enum):
    """PEFT types of the headwise methods (transformers calls ``peft_type.value.lower()``)."""

    LOFIT = "LOFIT"
    SOFT_INJECTION = "SOFT_INJECTION"
    ZEROTUNING = "ZEROTUNING"

    @property
    def prefix(self) -> str:
        """Prefix of every adapter parameter name, as PEFT expects: 'lofit_', ..."""
        return self.value.lower() + "_"


_METHODS: dict[HeadPeftType, tuple[type, type]] = {}


def register_method(peft_type: HeadPeftType, config_cls: type, tuner_cls: type) -> None:
    """Make ``peft_type`` known to PEFT: get_peft_model, PeftModel.from_pretrained, AutoPeftModel."""
    from peft import mapping

    known = _METHODS.get(peft_type)
    if known is not None:
        if known != (config_cls, tuner_cls):
            raise KeyError(f"{peft_type.value} is already registered with {known[0].__name__}")
        return
    tuner_cls.prefix = peft_type.prefix
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = tuner_cls
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = peft_type.prefix
    _METHODS[peft_type] = (config_cls, tuner_cls)


def registered_methods() -> dict[HeadPeftType, tuple[type, type]]:
    return dict(_METHODS)


def import_builtin_methods() -> None:
    for package in BUILTIN_METHOD_PACKAGES:
        module = importlib.import_module(package)
        if getattr(module, "__file__", None) is None:  # a plain folder of that name won the import
            raise ImportError(
                f"'{package}' was imported from the folder {list(module.__path__)[0]}, not from headwise's method "
                f"package: rename that folder (or run from another directory)"
            )
