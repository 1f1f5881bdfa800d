"""The CLI's user-error type."""


class UserError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 2."""
