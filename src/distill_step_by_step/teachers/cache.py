"""The resumable annotation cache: one JSON line per finished completion, appended as it arrives.

Each line is written, flushed and fsynced before the next reply is taken, so a run that is killed (or
whose teacher dies) keeps everything it finished; the next run skips those and asks only for the rest.
A line torn by a kill mid-write is cut off when the cache is next opened.

Lines are keyed by :func:`cache_key` = a hash of the teacher's identity (the settings that change its
outputs), the dataset's stop strings, the split, the example id and the exact prompt text. Change the
prompt file and every example of that dataset is redone; change the teacher's model or temperature and
everything is; change concurrency, timeouts or the server address and nothing is. Entries of other
teachers stay, so switching back reuses them.

A request the server refused for good (a permanent failure: an HTTP 400 for an over-long prompt, a 413,
a 422...) is recorded too, as a line with ``"completion": null``, its ``status`` and the server's reason
(``error``, shortened), so that no rerun asks for it again (:func:`is_failure`). Delete such a line to
have it asked again. Failures that waiting may cure (timeouts, 429, 5xx) are never recorded.

The cache lives outside DVC's outputs (``.resume/annotate/<dataset>.jsonl``; ``.resume/`` is
git- and dvc-ignored), because DVC deletes a stage's outputs before running it again. An exclusive
lock keeps two runs from writing one cache.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from ..errors import DataError
from ..jsonio import content_hash


def cache_key(identity: dict[str, Any], stop: list[str], split: str, example_id: str, prompt: str) -> str:
    """The key of one completion: everything that decides what the teacher writes for this example."""
    return content_hash([identity, stop, split, example_id, prompt], length=64)


def is_failure(row: dict[str, Any]) -> bool:
    """Whether a cache line records a request that failed for good rather than a completion."""
    return row.get("completion") is None


class AnnotationCache:
    """An append-only JSONL cache of completions (and permanent failures), opened with an exclusive lock."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = self.path.open("a+b")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise RuntimeError(f"{self.path}: another annotation run is writing this cache") from None
        self.entries: dict[str, dict[str, Any]] = {}
        try:
            self.torn_bytes = self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> int:
        """Read every complete line; cut off a torn last line. Returns the bytes cut."""
        self._fh.seek(0)
        data = self._fh.read()
        end = data.rfind(b"\n") + 1
        torn = len(data) - end
        if torn:
            self._fh.truncate(end)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        for lineno, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
                key = row["key"]
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                raise DataError("malformed annotation cache line (delete the file to start over)",
                                path=str(self.path), line=lineno) from None
            self.entries.setdefault(key, row)  # the first completion of a key is the one that counts
        self._fh.seek(0, os.SEEK_END)
        return torn

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def add(self, key: str, row: dict[str, Any]) -> None:
        """Persist one completion or permanent failure (written, flushed and fsynced before returning)."""
        if key in self.entries:
            return
        row = {"key": key, **row, "time": round(time.time(), 3)}
        self._fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.entries[key] = row

    def close(self) -> None:
        if not self._fh.closed:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()

    def __enter__(self) -> "AnnotationCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
