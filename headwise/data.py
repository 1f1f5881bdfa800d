"""Deprecated: moved to ``headwise.experiments.data``."""

from ._deprecated import alias_module

alias_module(__name__)
