"""JSON / JSON Lines reading and atomic writing, and content fingerprints.

Every write goes to a temporary file in the same directory and is renamed into place, so an
interrupted stage never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import DataError


def content_hash(obj: Any, length: int = 16) -> str:
    """A stable hex fingerprint of a JSON-able value (keys sorted; other objects by their ``str``)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def parse_jsonl_lines(lines: Iterable[str], source: str) -> list[dict[str, Any]]:
    """Parse JSON Lines text; a malformed or non-object line raises DataError naming source:line."""
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON line ({exc.msg} at column {exc.colno})", path=source, line=lineno) from None
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object per line, got {type(row).__name__}", path=source, line=lineno)
        rows.append(row)
    return rows


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON Lines file into a list of dicts (errors name the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    with path.open(encoding="utf-8") as fh:
        return parse_jsonl_lines(fh, str(path))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON document; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON ({exc.msg})", path=str(path), line=exc.lineno) from None


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing and rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, sort_keys=False)
        fh.write("\n")


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON Lines, atomically; returns the number of rows."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n


def write_lines(path: str | os.PathLike[str], lines: Iterable[str]) -> None:
    """Write one string per line, atomically."""
    with atomic_open(path) as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """Read non-empty lines (an id manifest)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
