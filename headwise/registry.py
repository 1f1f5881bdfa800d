"""Registry of headwise methods, and their registration with PEFT: open to any method.

``register_method(name, config_cls, tuner_cls)`` makes a method known to PEFT (``get_peft_model``,
``PeftModel.from_pretrained``, ``AutoPeftModel``) and to headwise's loader, CLI and model card. The
built-in methods (``lofit``, ``soft_injection``, ``zerotuning``) register through this same call; a
method defined anywhere else does too, with no change to ``headwise``.

PEFT's own ``register_peft_method`` only accepts names of its closed ``PeftType`` enum, so we put the
method's name, a :class:`MethodName` (a ``str``, as PEFT's tables key it, with the ``.value`` that
transformers reads), into PEFT's four mapping tables. ``tests/test_registry.py`` fails loudly when
PEFT changes those tables.
"""

from __future__ import annotations

import importlib
import re

__all__ = ["HeadPeftType", "MethodName", "register_method", "registered_methods", "import_builtin_methods"]

# Method packages shipped with headwise; imported (and so registered) when headwise is imported.
BUILTIN_METHOD_PACKAGES = ("lofit", "soft_injection", "zerotuning", "interventions")

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PREFIX = re.compile(r"^[a-z][a-z0-9_]*_$")


class MethodName(str):
    """A method's PEFT type: the upper-case name as a ``str`` with the enum-like ``.value`` / ``.name``."""

    @property
    def value(self) -> str:
        return str(self)

    @property
    def name(self) -> str:
        return str(self)


class HeadPeftType:
    """The built-in methods' names (any other method registers its own)."""

    LOFIT = MethodName("LOFIT")
    SOFT_INJECTION = MethodName("SOFT_INJECTION")
    ZEROTUNING = MethodName("ZEROTUNING")


_METHODS: dict[MethodName, tuple[type, type]] = {}


def _check(name: str, config_cls: type, tuner_cls: type) -> MethodName:
    """Everything is checked before any table changes."""
    from peft.utils import PeftType

    from .config import AdapterConfig
    from .tuner import HeadTuner

    if not isinstance(name, str) or not _NAME.match(name.upper()):
        raise ValueError(f"a method name is letters, digits and '_', starting with a letter; got {name!r}")
    method = MethodName(name.upper())
    if method in {t.value for t in PeftType}:
        raise ValueError(f"{method} is one of PEFT's own method names: choose another")
    if not (isinstance(config_cls, type) and issubclass(config_cls, AdapterConfig)):
        raise TypeError(f"config_cls must subclass headwise.AdapterConfig, got {config_cls!r}")
    if not (isinstance(tuner_cls, type) and issubclass(tuner_cls, HeadTuner)):
        raise TypeError(f"tuner_cls must subclass headwise.tuner.HeadTuner, got {tuner_cls!r}")
    from .adapter import HOOKS

    unknown_hooks = sorted(set(tuner_cls.tuner_layer_cls.hooks) - set(HOOKS))
    if unknown_hooks or not tuner_cls.tuner_layer_cls.hooks:
        raise ValueError(f"{tuner_cls.tuner_layer_cls.__name__}.hooks must name some of {list(HOOKS)}, got {tuner_cls.tuner_layer_cls.hooks}")
    prefix = tuner_cls.__dict__.get("prefix")
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ValueError(
            f"{tuner_cls.__name__} must declare its own parameter prefix, e.g. prefix = '{method.lower()}_' "
            f"(lower-case, ending in '_'); got {prefix!r}"
        )
    for other, (other_config, other_tuner) in _METHODS.items():
        if other != method and (other_tuner.prefix == prefix or other_tuner.prefix.startswith(prefix) or prefix.startswith(other_tuner.prefix)):
            raise ValueError(f"prefix {prefix!r} collides with {other}'s {other_tuner.prefix!r}: parameters would be confused")
    unprefixed = sorted(n for n in tuner_cls.tuner_layer_cls.adapter_layer_names if not n.startswith(prefix))
    if unprefixed:
        raise ValueError(f"{tuner_cls.tuner_layer_cls.__name__}'s trainable tensors must start with {prefix!r}: {unprefixed}")
    return method


def register_method(name: str, config_cls: type, tuner_cls: type) -> MethodName:
    """Make a head-level method known to PEFT and to headwise; returns its :class:`MethodName`.

    ``name``: any identifier (stored upper-case, e.g. "LOFIT"); it is what ``adapter_config.json``
    records as ``peft_type``. ``config_cls``: an ``AdapterConfig`` subclass. ``tuner_cls``: a
    ``HeadTuner`` subclass that declares ``prefix`` (its parameters' name prefix, e.g. "lofit_") and
    ``tuner_layer_cls``. Registering the same classes again is a no-op; other classes under a taken
    name are refused.
    """
    from peft import mapping

    method = _check(name, config_cls, tuner_cls)
    known = _METHODS.get(method)
    if known is not None:
        if known != (config_cls, tuner_cls):
            raise KeyError(f"{method} is already registered with {known[0].__name__}")
        return method
    config_cls.method = method
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[method] = config_cls
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[method] = tuner_cls
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[method] = tuner_cls.prefix
    _METHODS[method] = (config_cls, tuner_cls)
    return method


def registered_methods() -> dict[MethodName, tuple[type, type]]:
    return dict(_METHODS)


def import_builtin_methods() -> None:
    for package in BUILTIN_METHOD_PACKAGES:
        module = importlib.import_module(package)
        if getattr(module, "__file__", None) is None:  # a plain folder of that name won the import
            raise ImportError(
                f"'{package}' was imported from the folder {list(module.__path__)[0]}, not from headwise's method "
                f"package: rename that folder (or run from another directory)"
            )
