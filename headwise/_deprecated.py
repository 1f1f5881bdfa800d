"""Old module names kept working after the experiment kit moved to ``headwise.experiments``."""

from __future__ import annotations

import importlib
import sys
import warnings

MOVED_MODULES = {
    "data": "headwise.experiments.data",
    "classification": "headwise.experiments.classification",
    "evaluate": "headwise.experiments.evaluate",
    "plots": "headwise.experiments.plots",
    "training": "headwise.experiments.training",
    "models": "headwise.experiments.bundled",
}


def alias_module(old: str) -> None:
    """Make ``old`` (``headwise.data``, ...) the module it moved to, with a DeprecationWarning."""
    new = MOVED_MODULES[old.rsplit(".", 1)[1]]
    warnings.warn(f"{old} moved to {new}; import it from there (the old name goes in headwise 0.3)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
