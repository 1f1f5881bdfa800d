"""Where PEFT's generic behaviour does not fit head adapters, the defaults we give a wrapped model.

- PEFT calls ``transformers``' deprecated ``is_gradient_checkpointing`` when it wraps a model; that
  FutureWarning is PEFT's, not the user's, so ``headwise`` entry points silence exactly it.
- ``PeftModel.save_pretrained(save_embedding_layers="auto")`` asks the Hub whether the base model's
  vocabulary changed (a network call, and warnings offline). Head adapters never touch embeddings, so a
  headwise-wrapped model saves with ``save_embedding_layers=False`` unless told otherwise.
"""

from __future__ import annotations

import contextlib
import types
import warnings

UPSTREAM_DEPRECATIONS = (r".*is_gradient_checkpointing.*",)


@contextlib.contextmanager
def upstream_deprecations_silenced():
    """Silence the deprecation warnings PEFT's own calls raise inside ``transformers``."""
    with warnings.catch_warnings():
        for message in UPSTREAM_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        yield


def _save_pretrained(self, save_directory, *args, save_embedding_layers=False, **kwargs):
    """``PeftModel.save_pretrained`` without the Hub lookup for embedding changes (head adapters make none)."""
    return type(self).save_pretrained(self, save_directory, *args, save_embedding_layers=save_embedding_layers, **kwargs)


def apply_save_defaults(peft_model):
    """Give a headwise-wrapped ``PeftModel`` the save defaults above (bound per instance, survives deepcopy)."""
    peft_model.save_pretrained = types.MethodType(_save_pretrained, peft_model)
    return peft_model
