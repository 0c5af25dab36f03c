"""Errors that stop a run.

A misconfigured run (bad flag, missing file, unknown name) raises
:class:`UsageError`; the CLI prints its message on one line and exits with code 2.
A failed request is not an error here: it is recorded on its sample.
"""


class UsageError(Exception):
    """Bad input from the user: one line of explanation, exit code 2."""

    exit_code = 2
