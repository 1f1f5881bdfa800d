"""Deprecated: moved to ``headwise.experiments.bundled``."""

from ._deprecated import alias_module

alias_module(__name__)
