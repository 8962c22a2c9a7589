"""Parse a teacher's few-shot chain-of-thought completion into (rationale, label).

The rules are the authors' (``data_utils.py`` of google-research/distilling-step-by-step): cut the
run-on into the next few-shot exemplar, split at the dataset's answer marker, read the label after
it. Where the authors silently fall back to a blank label, we return ``ok=False`` with the reason, so
the corpus counts and reports it. On every completion that follows the pattern, the rationale and
label are exactly the authors'.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

NLI_LABELS = ("entailment", "neutral", "contradiction")  # the NLI datasets' labels, in the raw files' order


@dataclass(frozen=True)
class Parsed:
    """The result of parsing one completion."""

    rationale: str | None
    label: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _fail(reason: str) -> Parsed:
    return Parsed(None, None, reason)


def _split_once(text: str, marker: str) -> tuple[str, str] | str:
    parts = text.split(marker)
    if len(parts) == 1:
        return f"no answer marker: {marker!r}"
    if len(parts) > 2:
        return f"repeated answer marker: {marker!r} x{len(parts) - 1}"
    return parts[0], parts[1]


def _marked(text: str, next_exemplar: str, marker: str, read_label: Callable[[str], str | Parsed],
            allowed: tuple[str, ...] | None = None) -> Parsed:
    """Cut the run-on at the next exemplar, split once at the answer marker, read the label after it."""
    split = _split_once(text.split(next_exemplar)[0].rstrip(), marker)
    if isinstance(split, str):
        return _fail(split)
    rationale, tail = split
    label = read_label(tail)
    return label if isinstance(label, Parsed) else _checked(rationale.rstrip(), label, allowed)


def _choice_label(tail: str) -> str | Parsed:
    pieces = re.split(r"\(.\)", tail)
    if len(pieces) < 2:
        return _fail("no choice letter: expected '(x)' after the marker")
    label = pieces[1].strip()
    return label[:-1] if label.endswith(".") else label


def _equation_label(tail: str) -> str | Parsed:
    # the first line holding a '(' with a ')' after it, from that '(' to its last ')': what the authors'
    # re.search(r"\(.*\)") finds, in linear time (the regex backtracks quadratically on many unclosed '(')
    for line in tail.split("\n"):
        start, end = line.find("("), line.rfind(")")
        if start != -1 and end > start:
            return line[start:end + 1]
    return _fail("no equation: expected '(...)' after the marker")


def parse_choice(text: str) -> Parsed:
    """CQA: ``<rationale> So the answer is (c) wooded area.`` then ``\\n\\nQ: ...``."""
    return _marked(text, "Q:", "So the answer is", _choice_label)


def parse_equation(text: str) -> Parsed:
    """SVAMP: ``<rationale> The answer is (10 * 45).`` then ``\\n\\nQ: ...``."""
    return _marked(text, "Q:", "The answer is", _equation_label)


def parse_esnli(text: str) -> Parsed:
    """e-SNLI: ``<rationale>\\nAnswer: neutral`` then ``\\n\\nPremise: ...``."""
    if "Answer: " not in text:
        return _fail("no answer marker: 'Answer: '")
    rationale = text.split("Answer:")[0].rstrip()
    label = text.split("Answer: ")[1].split("Premise")[0].rstrip()
    return _checked(rationale, label, NLI_LABELS)


def parse_anli(text: str) -> Parsed:
    """ANLI: ``<rationale> So the answer is contradiction.`` then ``\\n\\nPremise: ...``."""
    return _marked(text, "Premise:", "So the answer is", lambda tail: tail.lstrip()[:-1], NLI_LABELS)


def _checked(rationale: str, label: str, allowed: tuple[str, ...] | None = None) -> Parsed:
    if not rationale.strip():
        return _fail("empty rationale")
    if not label.strip():
        return _fail("empty label")
    if allowed is not None and label not in allowed:
        return _fail(f"label outside the label set: {label[:40]!r}")
    return Parsed(rationale, label)
