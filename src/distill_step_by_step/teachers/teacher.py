"""What a live teacher is: the :class:`Teacher` protocol and the :class:`Request` and :class:`Reply` it deals in.

Every teacher implements :class:`Teacher`: ``identity()`` names the settings that change what it writes
(they key the resumable cache, so changing one redoes exactly the affected completions, while
concurrency, timeouts or a new server address redo nothing), and ``generate()`` yields one
:class:`Reply` per :class:`Request` *as each finishes*, so the caller can persist it at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Request:
    """One prompt to complete; ``key`` comes back in the reply."""

    key: str
    prompt: str


@dataclass
class Reply:
    """What became of one request: a completion (``error is None``) or a failure after all retries.

    A failure is ``permanent`` when the server refused this request itself (an HTTP 400, 413, 422...): asking
    again gets the same answer, so it is recorded and counted rather than asked for on every run.
    """

    key: str
    text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None
    status: int | None = None  # the HTTP status of the last answer, when it was not a completion
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class Teacher(Protocol):
    """What the annotation driver needs from a teacher."""

    name: str

    def identity(self) -> dict[str, Any]:
        """Settings that change the completions (never secrets, never transport details)."""
        ...

    def generate(self, requests: list[Request], stop: list[str]) -> Iterator[Reply]:
        """Complete every request, yielding each reply as soon as it is final (in any order)."""
        ...

    def close(self) -> None:
        """Release connections / memory."""
        ...
