"""Errors that name what was wrong and where, so a user can fix their input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: a missing file, a malformed row, a count mismatch.

    The message always names the file (and the line when there is one).
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
