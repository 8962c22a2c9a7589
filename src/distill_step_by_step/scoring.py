"""Answer scoring shared by the teacher baseline and the students."""

from __future__ import annotations

import re

from .arith import same_value

_WORDS = re.compile(r"\w+|[^\w\s]")


def normalise_text(text: str) -> str:
    """Lower-case and re-space words and punctuation, so tokenizer spacing ("don ' t") does not matter."""
    return " ".join(_WORDS.findall(text.lower()))


def is_correct(task: str, prediction: str | None, gold: str) -> bool:
    """Exact match after ``normalise_text``; SVAMP (``task == "equation"``) by the equation's value."""
    if prediction is None:
        return False
    if task == "equation":
        return same_value(prediction, gold)
    return normalise_text(prediction) == normalise_text(gold)


def accuracy(flags: list[bool]) -> float:
    """Mean of booleans; 0.0 for an empty list."""
    return sum(flags) / len(flags) if flags else 0.0
