"""Import PEFT without importing bitsandbytes, so ``import headwise`` stays quiet when nothing is quantised.

``peft.helpers`` imports bitsandbytes at import time when it is installed; bitsandbytes then loads its
kernels and logs a warning on CPU machines. We import PEFT with bitsandbytes hidden and hand
``peft.helpers`` a module that imports bitsandbytes on first use, so PEFT behaves exactly as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

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
