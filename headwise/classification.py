"""Deprecated: moved to ``headwise.experiments.classification``."""

from ._deprecated import alias_module

alias_module(__name__)
