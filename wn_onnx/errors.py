"""The one error type users see: a clear, single-line message and exit code 2."""


class WnError(Exception):
    """Bad input or usage. The CLI prints ``str(err)`` on one line and exits with 2."""
