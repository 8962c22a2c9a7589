"""Answer scoring shared by the teacher baseline, validation and test: two named rules.

* ``lenient`` (our headline rule): exact match after lower-casing and re-spacing words and punctuation,
  so a tokenizer's casing or spacing ("Michigan" -> "michigan", "don ' t") does not count as an error;
  equations (SVAMP) by the value of the expression, reading numbers whatever spacing a tokenizer put in
  them (a WordPiece student writes ``( 45. 0 / 10. 0 )`` for ``( 45.0 / 10.0 )``).
* ``exact`` (the authors' rule, for comparison with the paper): the prediction string equals the gold
  string; equations by the value of the expression as written (what the authors' ``eval`` reads, so
  ``45. 0`` is not a number), compared with ``==``.

An answer type (``DatasetSpec.answer_type``) is ``choice``, ``nli`` or ``equation`` (the paper's datasets), or
``label``, ``text`` or ``number`` (a task's); numbers and equations are compared by value, the rest as text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .arith import value_of

RULES = {
    "lenient": "exact match after lower-casing and re-spacing punctuation; equations by value, numbers read "
               "whatever their spacing",
    "exact": "the authors' rule: exact string match; equations by the value of the expression as written",
}
BY_VALUE = ("equation", "number")  # answer types compared by value
_WORDS = re.compile(r"\w+|[^\w\s]")
# A decimal point with spaces around it, between digits: "45. 0", "45 . 0" (WordPiece decoding).
_SPACED_POINT = re.compile(r"(?<=\d)\s*\.\s*(?=\d)")


def normalise_text(text: str) -> str:
    """Lower-case and re-space words and punctuation, so tokenizer spacing ("don ' t") does not matter."""
    return " ".join(_WORDS.findall(text.lower()))


def join_spaced_numbers(text: str) -> str:
    """``( 45. 0 / 10. 0 )`` -> ``( 45.0 / 10.0 )``: undo the spaces a tokenizer put inside numbers."""
    return _SPACED_POINT.sub(".", text)


def is_correct(answer_type: str, prediction: str | None, gold: str) -> bool:
    """The ``lenient`` rule (see the module docstring)."""
    if prediction is None:
        return False
    if answer_type in BY_VALUE:
        return _same_value(join_spaced_numbers(prediction), join_spaced_numbers(gold), exact=False)
    return normalise_text(prediction) == normalise_text(gold)


def is_exact(answer_type: str, prediction: str | None, gold: str) -> bool:
    """The ``exact`` rule, the authors' (see the module docstring)."""
    if prediction is None:
        return False
    if answer_type in BY_VALUE:
        return _same_value(prediction, gold, exact=True)
    return prediction == gold


def _same_value(prediction: str, gold: str, *, exact: bool) -> bool:
    a, b = value_of(prediction), value_of(gold)
    if a is None or b is None:
        return False
    return a == b if exact else abs(a - b) <= max(1e-9, 1e-6 * max(abs(a), abs(b)))


@dataclass(frozen=True)
class Score:
    """How many of ``n`` answers are right under each rule; unparsed answers (None) count as wrong."""

    n: int
    correct: int
    exact_correct: int
    unparsed: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def exact_accuracy(self) -> float:
        return self.exact_correct / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """The figures as written to metrics files (accuracies rounded to 4 places)."""
        return {"accuracy": round(self.accuracy, 4), "exact_accuracy": round(self.exact_accuracy, 4), "n": self.n,
                "correct": self.correct, "exact_correct": self.exact_correct, "unparsed": self.unparsed}


def score(answer_type: str, predictions: Sequence[str | None], golds: Sequence[str]) -> Score:
    """Score predictions against gold answers under both rules."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers")
    pairs = list(zip(predictions, golds))
    return Score(n=len(pairs),
                 correct=sum(is_correct(answer_type, p, g) for p, g in pairs),
                 exact_correct=sum(is_exact(answer_type, p, g) for p, g in pairs),
                 unparsed=sum(p is None for p, _ in pairs))
