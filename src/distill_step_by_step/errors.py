"""Errors that name what was wrong and where, so a user can fix their input."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class DataError(ValueError):
    """Bad input data: a missing file, a malformed row, a count mismatch.

    The message always names the file (and the line when there is one), and may say what to do.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, hint: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message + (f" ({hint})" if hint else ""))
        self.path = path
        self.line = line


class StageError(RuntimeError):
    """A stage could not finish for a reason it can state (e.g. some teacher requests failed; the rest is saved)."""


# What a stage expects from bad settings or data (DataError and settings.SettingsError are ValueErrors);
# anything else is a bug and keeps its traceback.
KNOWN_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, StageError)


def run_stage(main: Callable[[], object], name: str) -> None:
    """Run a stage's ``main``; a known error prints what, where and what to do, and exits 1.

    Set ``DSS_TRACEBACK=1`` to see the full traceback instead.
    """
    try:
        main()
    except KNOWN_ERRORS as exc:
        if os.environ.get("DSS_TRACEBACK"):
            raise
        print(f"{name}: error: {exc} [DSS_TRACEBACK=1 shows the traceback]", file=sys.stderr)
        raise SystemExit(1) from None
