"""Errors a user can act on: the CLI prints their message on one line and exits with code 2."""


class UsageError(Exception):
    """Bad arguments, settings or input data (missing path or column, wrong dimensions...)."""


class InvalidRowsError(UsageError):
    """Invalid item rows met with --on-invalid error (exit code 3 instead of 2)."""
