"""Deprecated: moved to ``headwise.experiments.evaluate``."""

from ._deprecated import alias_module

alias_module(__name__)
