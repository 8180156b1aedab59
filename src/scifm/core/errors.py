"""User-facing errors.

A `ScifmError` is bad input a user can fix: the CLI prints its one-line message and exits
with code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""


class ScifmError(Exception):
    """Bad input or environment, described in one line: what is wrong and how to fix it."""

    exit_code = 2
