"""The one user-facing error type.

Every problem a user can fix (bad path, bad option, foreign file) is raised as ``UserError`` with a
one-line message that names the file or option and the fix. The CLI prints it without a traceback
and exits with ``exit_code`` (2 = usage or input error, as in the regression gate's contract).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one line, exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __str__(self) -> str:  # keep it on one line whatever the caller passed
        return " ".join(str(self.args[0]).split())
