"""Errors that stop a run.

A misconfigured run (bad flag, missing file, unknown name) raises
:class:`UsageError`; the CLI prints its message on one line and exits with code 2.
A failed request is not an error here: it is recorded on its sample.
"""


import re

MAX_ERROR_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` as one bounded line for the terminal: control characters (line
    breaks, terminal escapes; a server's model id or reply may hold any) shown as
    escapes, and at most ``limit`` characters, the rest counted."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(message))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


class UsageError(Exception):
    """Bad input from the user: one line of explanation, exit code 2."""

    exit_code = 2
