"""What the ``headwise`` command runs: one module per subcommand (train, evaluate, merge, inspect).

The command's arguments live in the top-level ``headwise_cli`` package, which imports neither torch nor
this library, so ``headwise --help`` and argument errors answer at once; ``python -m headwise.cli`` is the
same command.
"""

from headwise_cli import main

from .errors import UserError

__all__ = ["UserError", "main"]
