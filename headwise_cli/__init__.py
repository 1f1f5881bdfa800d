"""The headwise command: train, evaluate, merge and inspect head-level adapters from the shell.

    headwise train lofit|soft-injection|zerotuning --model NAME_OR_PATH --data SOURCE --out DIR [options]
    headwise eval DIR --data SOURCE             accuracy of a saved adapter (--baseline zero-shot|few-shot[=K])
    headwise merge DIR --out DIR                a plain transformers checkpoint with the adapter merged in
    headwise inspect DIR_OR_MODEL               a saved adapter (config, heads, trained values) or a model's heads

SOURCE is a JSON / JSONL / CSV file, a Hub dataset name, or a reference task name with --data-dir /
$HEADWISE_DATA. ``--model smollm2-135m-instruct`` is the bundled SmolLM2-135M-Instruct. A mistake in
the command or its files prints one line and exits with status 2, before any model is loaded.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .commands import COMMANDS

__all__ = ["build_parser", "main"]

USAGE_ERROR = 2


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line that names the flag and where to read more."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="headwise", description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quiet", action="store_true", help="only results and errors (no progress bars or logging)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    command = importlib.import_module(f"headwise.cli.{args.module}")  # torch and the library load from here on
    from headwise.cli.errors import UserError, one_line

    if args.quiet:
        from headwise.cli.options import silence_progress_bars

        silence_progress_bars()
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():  # log lines above the progress bars, not through them
            command.run(args)
    except (UserError, ValueError, TypeError, KeyError, OSError, ImportError) as error:  # one line, no traceback
        print(f"headwise {args.command}: error: {one_line(error)}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


if __name__ == "__main__":
    main()
