"""The CLI's user-error type, and turning any error into the one line the CLI prints."""


class UserError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's message without its quotes)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(message).split())
