"""The training methods, each one object in one registry: what it trains on, which task sub-batches a step
runs with which loss weights, how its output is read back and how it shows rationales (how reports name and
draw it: ``report/presentation.py``).

* ``finetune``: input -> gold label (standard fine-tuning).
* ``distill``: input -> teacher label (standard distillation; the unlabeled setting).
* ``step_by_step``: ``predict: input`` -> label and ``explain: input`` -> teacher rationale, trained
  together with loss ``alpha * L_label + (1 - alpha) * L_rationale``; labels gold or teacher.
* ``single_task``: input -> ``rationale Answer: label`` (ablation); the label is read back from the output.

Adding a method is one :class:`Method` subclass passed to :func:`register` (its settings, its examples,
its task units for a given step, its output reading), and its tests; the
settings, the training loop, inference and the report take everything from here. A module named in the
environment variable ``DSS_PLUGINS`` is imported when the registry is first read: a method (or a dataset)
defined outside the package registers itself there.

Rows whose teacher output did not parse cannot provide a teacher label or rationale: they are dropped
from the tasks that need them and counted (``RowStats``), never silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from ..data.datasets import student_text
from ..plugins import Registry

if TYPE_CHECKING:
    import torch


class MethodSettings(Protocol):
    """What a method reads of its settings: ``settings.MethodConfig``, checked there against this registry."""

    @property
    def name(self) -> str: ...  # a registered method

    @property
    def alpha(self) -> float: ...  # the label task's share of the loss

    @property
    def labels(self) -> str: ...  # gold | teacher


R = TypeVar("R")  # a tokenised row (students.modeling.Row)
Units = list[tuple[list[Any], float]]  # the task sub-batches of one micro-batch and their loss weights

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


def target_label(record: dict[str, Any], cfg: "MethodSettings") -> str | None:
    """The label a method trains (and validates) on: gold, or the teacher's when it parsed."""
    if cfg.labels == "gold":
        return record["label"]
    return record["teacher_label"] if record.get("teacher_ok") else None


def has_rationale(record: dict[str, Any]) -> bool:
    """Whether the teacher's rationale of a record parsed."""
    return bool(record.get("teacher_ok")) and bool(record.get("rationale"))


class Method:
    """A training method. The base class is standard fine-tuning's behaviour: one label task, weight 1."""

    name: ClassVar[str]
    settings: ClassVar[tuple[str, ...]] = ()  # what params.yaml may set under methods.<name>
    fixed: ClassVar[Mapping[str, Any]] = {}  # the settings it fixes (finetune trains on gold labels)

    def predict_source(self, record: dict[str, Any], separator: str | None) -> str:
        """The text the student sees when asked for a label (also at test time)."""
        return student_text(record, separator)

    def example(self, record: dict[str, Any], label: str, separator: str | None, stats: RowStats) -> TextExample | None:
        """The training example of one record with its label (None: the record cannot be used)."""
        return TextExample(self.predict_source(record, separator), label)

    def examples(self, records: list[dict[str, Any]], cfg: "MethodSettings",
                 separator: str | None) -> tuple[list[TextExample], RowStats]:
        """Text examples from corpus records, with counts of what was dropped and why."""
        stats = RowStats(examples=len(records))
        out: list[TextExample] = []
        for rec in records:
            label = target_label(rec, cfg)
            if label is None:
                stats.drop("teacher label unparsed")
                continue
            ex = self.example(rec, label, separator, stats)
            if ex is None:
                continue
            stats.used += 1
            stats.with_rationale += ex.rationale_target is not None or self.rationale_in_label
            out.append(ex)
        return out, stats

    rationale_in_label: ClassVar[bool] = False  # the label target carries the rationale (single_task)

    def units(self, cfg: "MethodSettings", step: int, batch: Sequence[int], label_rows: Sequence[R],
              rationale_rows: Mapping[int, R], grad_accum: int = 1) -> Units:
        """The task sub-batches of one micro-batch at optimizer step ``step`` and their loss weights, divided
        by ``grad_accum`` so that accumulated micro-batches add up to one step's loss."""
        return [([label_rows[i] for i in batch], 1.0 / grad_accum)]

    def read_label(self, text: str) -> str:
        """The label in a decoded output."""
        return text.strip()

    def rationales(self, explain: Any, records: list[dict[str, Any]], outputs: list[str]) -> list[str | None]:
        """Rationales to show beside predictions; ``explain(sources)`` decodes ``explain:`` inputs."""
        return [None] * len(records)  # trained without rationales: nothing to show


class FineTune(Method):
    name, fixed = "finetune", {"labels": "gold"}


class Distill(Method):
    name, fixed = "distill", {"labels": "teacher"}


class StepByStep(Method):
    name, settings = "step_by_step", ("alpha", "labels")

    def predict_source(self, record: dict[str, Any], separator: str | None) -> str:
        return PREDICT_PREFIX + student_text(record, separator)

    def example(self, record: dict[str, Any], label: str, separator: str | None, stats: RowStats) -> TextExample:
        ex = TextExample(self.predict_source(record, separator), label)
        if has_rationale(record):
            ex.rationale_source, ex.rationale_target = explain_source(record, separator), record["rationale"]
        else:
            stats.drop("rationale unparsed (label task kept)")
        return ex

    def units(self, cfg: "MethodSettings", step: int, batch: Sequence[int], label_rows: Sequence[R],
              rationale_rows: Mapping[int, R], grad_accum: int = 1) -> Units:
        """The label task with weight ``alpha`` and the rationale task with ``1 - alpha`` (each a token-mean
        loss, as the authors' two forward passes); a task with zero weight is not computed at all."""
        units: Units = []
        if cfg.alpha > 0.0:
            units.append(([label_rows[i] for i in batch], cfg.alpha / grad_accum))
        rationales = [rationale_rows[i] for i in batch if i in rationale_rows]
        if cfg.alpha < 1.0 and rationales:
            units.append((rationales, (1.0 - cfg.alpha) / grad_accum))
        return units

    def rationales(self, explain: Any, records: list[dict[str, Any]], outputs: list[str]) -> list[str | None]:
        return explain(records)


class SingleTask(Method):
    name, settings = "single_task", ("labels",)
    rationale_in_label = True

    def example(self, record: dict[str, Any], label: str, separator: str | None, stats: RowStats) -> TextExample | None:
        if not has_rationale(record):
            stats.drop("teacher rationale unparsed")
            return None
        return TextExample(student_text(record, separator), single_task_target(record["rationale"], label))

    def read_label(self, text: str) -> str:
        return _split_answer(text)[1]

    def rationales(self, explain: Any, records: list[dict[str, Any]], outputs: list[str]) -> list[str | None]:
        return [rationale_from_output(o) for o in outputs]


METHODS: Registry[Method] = Registry("method")
register = METHODS.register  # add a method (its name must be new)
registry = METHODS.all  # every registered method by name, plugins included
get_method = METHODS.get  # a method by name; an unknown name lists the known ones


for _method in (FineTune(), Distill(), StepByStep(), SingleTask()):
    register(_method)


# ----- what the rest of the package calls: each asks the method of the settings it is given -----

def predict_source(record: dict[str, Any], cfg: "MethodSettings", separator: str | None) -> str:
    """The text the student sees when asked for a label (also at test time)."""
    return get_method(cfg.name).predict_source(record, separator)


def explain_source(record: dict[str, Any], separator: str | None) -> str:
    """The text the student sees when asked for a rationale (step_by_step only)."""
    return EXPLAIN_PREFIX + student_text(record, separator)


def single_task_target(rationale: str, label: str) -> str:
    """The ``single_task`` target: the rationale, then the label behind a marker."""
    return f"{rationale}{ANSWER_MARKER}{label}"


def label_from_output(cfg: "MethodSettings", text: str) -> str:
    """The label in a decoded output (``single_task`` reads it from behind the last marker)."""
    return get_method(cfg.name).read_label(text)


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


def training_examples(records: list[dict[str, Any]], cfg: "MethodSettings",
                      separator: str | None) -> tuple[list[TextExample], RowStats]:
    """Text examples for the method of ``cfg`` from corpus records, with counts of what was dropped and why."""
    return get_method(cfg.name).examples(records, cfg, separator)


def task_units(cfg: "MethodSettings", batch: Sequence[int], label_rows: Sequence[R], rationale_rows: Mapping[int, R],
               grad_accum: int = 1, step: int = 0) -> Units:
    """The task sub-batches of one micro-batch (at optimizer step ``step``) and their loss weights."""
    return get_method(cfg.name).units(cfg, step, batch, label_rows, rationale_rows, grad_accum)


def weighted_loss(losses: Sequence["torch.Tensor"], weights: Sequence[float]) -> "torch.Tensor":
    """``alpha * L_label + (1 - alpha) * L_rationale`` (or ``L_label`` alone): the loss one micro-batch back-propagates."""
    total = weights[0] * losses[0]
    for weight, loss in zip(weights[1:], losses[1:]):
        total = total + weight * loss
    return total
