"""The four training methods and how each turns corpus records into (source, target) text pairs.

* ``finetune``: input -> gold label (standard fine-tuning).
* ``distill``: input -> teacher label (standard distillation; the unlabeled setting).
* ``step_by_step``: ``predict: input`` -> label and ``explain: input`` -> teacher rationale, trained
  together with loss ``alpha * L_label + (1 - alpha) * L_rationale``; labels gold or teacher.
* ``single_task``: input -> ``rationale Answer: label`` (ablation); the label is read back from the output.

This module is the one home of the two tasks: which pairs each method trains (:func:`training_examples`),
which task sub-batches a step runs with which weights (:func:`task_units`) and how their losses are
combined (:func:`weighted_loss`). ``alpha`` and the label source are declared in ``settings.MethodConfig``.

Rows whose teacher output did not parse cannot provide a teacher label or rationale: they are dropped
from the tasks that need them and counted (``RowStats``), never silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .datasets import student_text
from .settings import MethodConfig

if TYPE_CHECKING:
    import torch

R = TypeVar("R")  # a tokenised row (modeling.Row)

PREDICT_PREFIX = "predict: "
EXPLAIN_PREFIX = "explain: "
ANSWER_MARKER = " Answer: "
_ANSWER_RE = re.compile(r"answer\s*:", re.IGNORECASE)


@dataclass
class TextExample:
    """One training example as text: its label-task pair and (step_by_step) its rationale-task pair."""

    label_source: str
    label_target: str
    rationale_source: str | None = None
    rationale_target: str | None = None


@dataclass
class RowStats:
    """How many examples of a training subset each task could use, and why the rest were dropped."""

    examples: int = 0
    used: int = 0
    with_rationale: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def predict_source(record: dict[str, Any], method: MethodConfig, separator: str | None) -> str:
    """The text the student sees when asked for a label (also at test time)."""
    text = student_text(record, separator)
    return PREDICT_PREFIX + text if method.name == "step_by_step" else text


def explain_source(record: dict[str, Any], separator: str | None) -> str:
    """The text the student sees when asked for a rationale (step_by_step only)."""
    return EXPLAIN_PREFIX + student_text(record, separator)


def target_label(record: dict[str, Any], method: MethodConfig) -> str | None:
    """The label this method trains (and validates) on: gold, or the teacher's when it parsed."""
    if method.labels == "gold":
        return record["label"]
    return record["teacher_label"] if record.get("teacher_ok") else None


def single_task_target(rationale: str, label: str) -> str:
    """The ``single_task`` target: the rationale, then the label behind a marker."""
    return f"{rationale}{ANSWER_MARKER}{label}"


def label_from_output(method: MethodConfig, text: str) -> str:
    """The label in a decoded output (``single_task`` reads it from behind the last marker)."""
    if method.name != "single_task":
        return text.strip()
    return _split_answer(text)[1]


def rationale_from_output(text: str) -> str:
    """The rationale of a ``single_task`` output: what stands before the last answer marker."""
    return _split_answer(text)[0]


def _split_answer(text: str) -> tuple[str, str]:
    # (rationale, label) around the last "Answer:" marker; (all of it, "") without one
    matches = list(_ANSWER_RE.finditer(text))
    if not matches:
        return text.strip(), ""
    last = matches[-1]
    return text[:last.start()].strip(), text[last.end():].strip()


def training_examples(
    records: list[dict[str, Any]], method: MethodConfig, separator: str | None
) -> tuple[list[TextExample], RowStats]:
    """Text examples for ``method`` from corpus records, with counts of what was dropped and why."""
    stats = RowStats(examples=len(records))
    out: list[TextExample] = []
    for rec in records:
        label = target_label(rec, method)
        if label is None:
            stats.drop("teacher label unparsed")
            continue
        has_rationale = bool(rec.get("teacher_ok")) and bool(rec.get("rationale"))
        if method.name == "single_task":
            if not has_rationale:
                stats.drop("teacher rationale unparsed")
                continue
            ex = TextExample(student_text(rec, separator), single_task_target(rec["rationale"], label))
        else:
            ex = TextExample(predict_source(rec, method, separator), label)
            if method.name == "step_by_step":
                if has_rationale:
                    ex.rationale_source = explain_source(rec, separator)
                    ex.rationale_target = rec["rationale"]
                else:
                    stats.drop("rationale unparsed (label task kept)")
        stats.used += 1
        stats.with_rationale += ex.rationale_target is not None or method.name == "single_task"
        out.append(ex)
    return out, stats


def task_units(method: MethodConfig, batch: Sequence[int], label_rows: Sequence[R], rationale_rows: Mapping[int, R],
               grad_accum: int = 1) -> list[tuple[list[R], float]]:
    """The task sub-batches of one micro-batch and their loss weights.

    ``step_by_step``: the label task with weight ``alpha`` and the rationale task with ``1 - alpha``
    (each a token-mean loss, as the authors' two forward passes); every other method: the label task
    with weight 1. A task with zero weight is not computed at all. Weights are divided by ``grad_accum``
    so that accumulated micro-batches add up to one step's loss.
    """
    alpha = method.alpha if method.name == "step_by_step" else 1.0
    units = []
    if alpha > 0.0:
        units.append(([label_rows[i] for i in batch], alpha / grad_accum))
    rationales = [rationale_rows[i] for i in batch if i in rationale_rows]
    if method.name == "step_by_step" and alpha < 1.0 and rationales:
        units.append((rationales, (1.0 - alpha) / grad_accum))
    return units


def weighted_loss(losses: Sequence["torch.Tensor"], weights: Sequence[float]) -> "torch.Tensor":
    """``alpha * L_label + (1 - alpha) * L_rationale`` (or ``L_label`` alone): the loss one micro-batch back-propagates."""
    total = weights[0] * losses[0]
    for weight, loss in zip(weights[1:], losses[1:]):
        total = total + weight * loss
    return total
