"""The single-task ablation: input -> ``rationale Answer: label``; the label is read back from behind the last
answer marker, the rationale from before it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..data.datasets import student_text
from .method import Method, RowStats, TextExample, has_rationale
from .registry import register

ANSWER_MARKER = " Answer: "
_ANSWER_RE = re.compile(r"answer\s*:", re.IGNORECASE)


def single_task_target(rationale: str, label: str) -> str:
    """The target: the rationale, then the label behind a marker."""
    return f"{rationale}{ANSWER_MARKER}{label}"


def rationale_from_output(text: str) -> str:
    """The rationale of an output: what stands before the last answer marker."""
    return _split_answer(text)[0]


def _split_answer(text: str) -> tuple[str, str]:
    # (rationale, label) around the last "Answer:" marker; (all of it, "") without one
    matches = list(_ANSWER_RE.finditer(text))
    if not matches:
        return text.strip(), ""
    last = matches[-1]
    return text[:last.start()].strip(), text[last.end():].strip()


class SingleTask(Method):
    name, tunables = "single_task", ("labels",)
    rationale_in_label = True

    def example(self, record: dict[str, Any], label: str, separator: str | None, stats: RowStats) -> TextExample | None:
        if not has_rationale(record):
            stats.drop("teacher rationale unparsed")
            return None
        return TextExample(student_text(record, separator), single_task_target(record["rationale"], label))

    def read_label(self, text: str) -> str:
        return _split_answer(text)[1]

    def rationales(self, explain: Callable[[list[str]], list[str]], records: list[dict[str, Any]],
                   outputs: list[str], separator: str | None) -> list[str | None]:
        return [rationale_from_output(o) for o in outputs]


register(SingleTask())
