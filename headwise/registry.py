"""Registry of headwise methods, and their registration with PEFT: open to any method.

``register_method(name, config_cls, tuner_cls)`` makes a method known to PEFT (``get_peft_model``,
``PeftModel.from_pretrained``, ``AutoPeftModel``) and to headwise's loader, CLI and model card. Every
method, those shipped beside headwise included, registers through this same call when its package is
imported; ``headwise`` itself names no method and imports none.

Finding a method by the name an adapter was saved with (``adapter_config.json``'s ``peft_type``):
:func:`method_classes` looks in the registry and, for a name not registered yet, imports the package
that declares it as an entry point of the group ``headwise.methods`` (its name: the method's name in
lower case, its value: the module whose import registers the method)::

    [project.entry-points."headwise.methods"]
    head_gain = "my_package"

headwise's loader, CLI and model card go through it. PEFT's own entry points
(``PeftModel.from_pretrained``, ``AutoPeftModelForCausalLM``) read PEFT's tables directly: import the
method's package first, or call :func:`load_methods` to import every installed one.

PEFT's own ``register_peft_method`` only accepts names of its closed ``PeftType`` enum, so we put the
method's name, a :class:`MethodName` (a ``str``, as PEFT's tables key it, with the ``.value`` that
transformers reads), into PEFT's method tables (:func:`headwise.compat.peft_method_tables`).
``tests/test_registry.py`` fails loudly when PEFT changes those tables. Registering also gives every
``PeftModel`` PEFT builds for a headwise method the defaults of :mod:`headwise._peft_defaults` (no upstream
deprecation warning, no Hub lookup on save).
"""

from __future__ import annotations

import re
import types

__all__ = [
    "ENTRY_POINT_GROUP", "MethodName", "UnknownMethodError", "load_methods", "method_classes", "register_method",
    "registered_methods",
]

ENTRY_POINT_GROUP = "headwise.methods"

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
    from .adapter import HeadLayer

    layer_cls = tuner_cls.tuner_layer_cls
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, HeadLayer)):
        raise TypeError(f"{tuner_cls.__name__}.tuner_layer_cls must subclass headwise.adapter.HeadLayer, got {layer_cls!r}")
    if not (layer_cls._defines("edit_heads") or layer_cls._defines("edit_mask")):
        raise TypeError(f"{layer_cls.__name__} must implement edit_heads(heads, adapter_name, call) and / or "
                        "edit_mask(mask, adapter_name, call): it edits nothing")
    if not layer_cls._defines("create_parameters"):
        raise TypeError(f"{layer_cls.__name__} must implement create_parameters(adapter_name, num_selected, config)")
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
    for other, classes in _METHODS.items():
        for kind, cls, taken in (("config", config_cls, classes[0]), ("tuner", tuner_cls, classes[1])):
            if other != method and cls is taken:
                raise ValueError(
                    f"{cls.__name__} is already registered as {other}: a {kind} class belongs to one method "
                    f"(subclass it to register {method})"
                )
    return method


def register_method(name: str, config_cls: type, tuner_cls: type) -> MethodName:
    """Make a head-level method known to PEFT and to headwise; returns its :class:`MethodName`.

    ``name``: any identifier (stored upper-case, e.g. "LOFIT"); it is what ``adapter_config.json``
    records as ``peft_type``. ``config_cls``: an ``AdapterConfig`` subclass. ``tuner_cls``: a
    ``HeadTuner`` subclass that declares ``prefix`` (its parameters' name prefix, e.g. "lofit_") and
    ``tuner_layer_cls``. Registering the same classes again is a no-op; other classes under a taken
    name are refused.
    """
    from . import _peft_defaults
    from .compat import peft_method_tables

    method = _check(name, config_cls, tuner_cls)
    known = _METHODS.get(method)
    if known is not None:
        if known != (config_cls, tuner_cls):
            raise KeyError(f"{method} is already registered with {known[0].__name__}")
        return method
    tables = peft_method_tables()
    _peft_defaults.install()  # PEFT's own entry points then build its models quietly and save them offline
    config_cls.method = method
    tables.config[method] = config_cls
    tables.tuner[method] = tuner_cls
    tables.prefix[method] = tuner_cls.prefix
    _METHODS[method] = (config_cls, tuner_cls)
    return method


def registered_methods() -> dict[MethodName, tuple[type, type]]:
    return dict(_METHODS)


class UnknownMethodError(LookupError):
    """No registered method and no installed ``headwise.methods`` entry point has the name asked for."""


_LOADED: set[tuple[str, str]] = set()  # (name, value) of the entry points imported so far


def _entry_points(name: str | None = None) -> list:
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINT_GROUP)
    return [ep for ep in found if name is None or ep.name.upper() == name.upper()]


def _load(entry_point) -> None:
    key = (entry_point.name, entry_point.value)
    if key in _LOADED:
        return
    try:
        module = entry_point.load()
    except Exception as error:  # noqa: BLE001 - any failure of a method package becomes one clear message
        raise ImportError(
            f"importing {entry_point.value!r} (entry point {entry_point.name!r} of {ENTRY_POINT_GROUP!r}) failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    if isinstance(module, types.ModuleType) and getattr(module, "__file__", None) is None:
        raise ImportError(  # a plain folder of that name, e.g. in the current directory, won the import
            f"{entry_point.value!r} was imported from the folder {list(module.__path__)[0]}, not from the installed "
            f"package that declares the method {entry_point.name!r}: rename that folder (or run from another directory)"
        )
    _LOADED.add(key)


def load_methods(name: str | None = None) -> dict[MethodName, tuple[type, type]]:
    """Import the packages of the installed methods (``headwise.methods`` entry points), so that they
    register; with ``name``, only the entry point of that name. Returns :func:`registered_methods`.

    Needed before PEFT's own loaders (``PeftModel.from_pretrained``, ``AutoPeftModelForCausalLM``) when the
    method's package was not imported; headwise's own loaders find the method themselves."""
    failures = []
    for entry_point in _entry_points(name):
        try:
            _load(entry_point)
        except ImportError as error:
            failures.append(error)
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise ImportError("; ".join(str(f) for f in failures))
    return registered_methods()


def method_classes(name: str) -> tuple[type, type]:
    """``(config class, tuner class)`` of the method named ``name`` (what ``adapter_config.json`` records as
    ``peft_type``), importing its package through its entry point if it is not registered yet;
    :class:`UnknownMethodError` when no installed package provides it."""
    if not isinstance(name, str):
        raise UnknownMethodError(f"a method name is a string, got {name!r}")
    if name in _METHODS:
        return _METHODS[name]
    load_methods(name)  # the entry point of that name; its import errors are the user's answer
    failed = ""
    if name not in _METHODS:
        try:
            load_methods()  # a package may also register methods under other names than its entry points'
        except ImportError as error:
            failed = f" (and some installed method packages failed to import: {error})"
    if name in _METHODS:
        return _METHODS[name]
    raise UnknownMethodError(
        f"no headwise method {name!r} is registered, and no installed package declares it as a {ENTRY_POINT_GROUP!r} "
        f"entry point; known: {sorted(_METHODS)}{failed}. Import the package that defines it before loading "
        f"(by convention `import {name.lower()}`), or pip install it"
    )
