"""Where PEFT's generic behaviour does not fit head adapters, the defaults we give a wrapped model.

- PEFT's ``PeftModel.__init__`` reads ``transformers``' deprecated ``is_gradient_checkpointing`` of the base
  model after it has built the tuner; that FutureWarning is PEFT's, not the user's. For a headwise method that
  call runs with exactly that warning silenced (nothing else, and only for the duration of the call).
- ``PeftModel.save_pretrained(save_embedding_layers="auto")`` asks the Hub whether the base model's
  vocabulary changed (a network call, and warnings offline). Head adapters never touch embeddings, so a
  model with a headwise adapter saves with ``save_embedding_layers=False`` unless told otherwise.

Both apply to every way PEFT builds a model with a headwise adapter (``peft.get_peft_model``,
``PeftModel.from_pretrained``, ``AutoPeftModelForCausalLM``, ``headwise.wrap``): :func:`install` wraps
``PeftModel.__init__`` once, when the first method registers; other PEFT methods pass through untouched.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

from peft import PeftModel

from .config import AdapterConfig

UPSTREAM_DEPRECATIONS = (r".*is_gradient_checkpointing.*",)


@contextlib.contextmanager
def upstream_deprecations_silenced():
    """Silence the deprecation warnings PEFT's own calls raise inside ``transformers``."""
    with warnings.catch_warnings():
        for message in UPSTREAM_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        yield


def apply_save_defaults(peft_model):
    """Give a ``PeftModel`` with a headwise adapter the save defaults above: bound per instance as a
    ``functools.partial`` (survives deepcopy and pickling); an explicit ``save_embedding_layers=`` still wins."""
    peft_model.save_pretrained = functools.partial(type(peft_model).save_pretrained, peft_model,
                                                   save_embedding_layers=False)
    return peft_model


def _with_headwise_defaults(init):
    """``PeftModel.__init__`` that, for a headwise adapter config, runs quiet and binds the save defaults."""

    @functools.wraps(init)
    def __init__(self, model, peft_config, *args, **kwargs):
        if not isinstance(peft_config, AdapterConfig):
            return init(self, model, peft_config, *args, **kwargs)
        with upstream_deprecations_silenced():
            init(self, model, peft_config, *args, **kwargs)
        apply_save_defaults(self)

    __init__.headwise_defaults = True
    return __init__


def install() -> None:
    """Wrap ``PeftModel.__init__`` once per process: PEFT's own entry points then give headwise adapters these defaults."""
    if not getattr(PeftModel.__init__, "headwise_defaults", False):
        PeftModel.__init__ = _with_headwise_defaults(PeftModel.__init__)
