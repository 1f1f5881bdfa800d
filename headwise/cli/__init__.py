"""The headwise command: train, evaluate, merge and inspect head-level adapters from the shell.

    headwise train lofit|soft-injection|zerotuning --model NAME_OR_PATH --data SOURCE --out DIR [options]
    headwise eval DIR --data SOURCE             accuracy of a saved adapter (and of its base with --baseline)
    headwise merge DIR --out DIR                a plain transformers checkpoint with the adapter merged in
    headwise inspect DIR_OR_MODEL               a saved adapter (config, parameters, heads, PNG) or a model's heads

SOURCE is a JSON / JSONL / CSV file, a Hub dataset name, or a reference task name with --data-dir /
$HEADWISE_DATA. ``--model smollm2-135m-instruct`` is the bundled SmolLM2-135M-Instruct. A mistake in
the command or its files prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import UserError

__all__ = ["main", "UserError"]


def build_parser() -> argparse.ArgumentParser:
    from . import evaluate, inspect, merge, train

    parser = argparse.ArgumentParser(
        prog="headwise", description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quiet", action="store_true", help="only results and errors (no progress logging)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (train, evaluate, merge, inspect):
        module.add_parser(commands)
    return parser


def _silence_progress_bars() -> None:
    from transformers.utils import logging as transformers_logging

    from ..progress import disable_progress_bars

    disable_progress_bars()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.quiet:
        _silence_progress_bars()
    try:
        args.run(args)
    except (UserError, ValueError, TypeError, KeyError, OSError, ModuleNotFoundError) as error:  # one line, no traceback
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"headwise: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
