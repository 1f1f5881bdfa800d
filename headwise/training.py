"""Deprecated: moved to ``headwise.experiments.training``."""

from ._deprecated import alias_module

alias_module(__name__)
