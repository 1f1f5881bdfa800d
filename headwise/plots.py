"""Deprecated: moved to ``headwise.experiments.plots``."""

from ._deprecated import alias_module

alias_module(__name__)
