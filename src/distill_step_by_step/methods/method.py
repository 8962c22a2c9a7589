"""What every training method is: a :class:`Method` (its settings class, the examples it trains on, the task
sub-batches of a step with their loss weights, its loss, how its output is read back) and the pieces methods
share. Each method is one file of this package that subclasses :class:`Method` and registers an instance
(``registry.py`` imports every file here); how reports name and draw it is ``report/presentation.py``'s.

Rows whose teacher output did not parse cannot provide a teacher label or rationale: they are dropped
from the tasks that need them and counted (:class:`RowStats`), never silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..data.datasets import student_text
from ..jsonio import content_hash
from ..schema import setting

if TYPE_CHECKING:
    import torch

R = TypeVar("R")  # a tokenised row (students.modeling.Row)
Units = list[tuple[list[Any], float]]  # the task sub-batches of one micro-batch and their loss weights

LABEL_SOURCES = ("gold", "teacher")


@dataclass(frozen=True)
class MethodSettings:
    """``methods.<name>``: what every method's record holds (``student.json``'s ``method_config``). A method
    with tunables of its own subclasses this and names them in :attr:`Method.tunables`."""

    name: str  # a registered method
    # the label task's share of the loss where a method trains two tasks (a one-task method keeps the default)
    alpha: float = setting(0.5, ge=0, le=1)
    labels: str = setting("gold", choices=LABEL_SOURCES)  # which label the student learns: gold or the teacher's
    # a variant's own name (``methods.<variant>: {extends: <name>, ...}``); None for the method itself
    variant: str | None = None

    # settings a record leaves out while they hold their default (added after cells were kept, so that those
    # cells' records stay as they were: absent means the default)
    quiet_defaults: ClassVar[tuple[str, ...]] = ("variant",)

    def record(self) -> dict[str, Any]:
        """What ``student.json`` and a checkpoint record of these settings (``method_config``)."""
        defaults = {f.name: f.default for f in fields(self)}
        quiet = {*MethodSettings.quiet_defaults, *self.quiet_defaults}
        return {k: v for k, v in asdict(self).items() if not (k in quiet and v == defaults[k])}


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


def target_label(record: dict[str, Any], cfg: MethodSettings) -> str | None:
    """The label a method trains (and validates) on: gold, or the teacher's when it parsed."""
    if cfg.labels == "gold":
        return record["label"]
    return record["teacher_label"] if record.get("teacher_ok") else None


def has_rationale(record: dict[str, Any]) -> bool:
    """Whether the teacher's rationale of a record parsed."""
    return bool(record.get("teacher_ok")) and bool(record.get("rationale"))


def drawn(records: Sequence[dict[str, Any]], fraction: float, seed: int) -> set[int]:
    """The positions of ``round(fraction * n)`` of the records, drawn with ``seed`` by a seeded hash of each
    record's id: a smaller fraction's draw is part of every larger one's, and whether an example is drawn
    does not depend on the other examples' order."""
    k = int(round(fraction * len(records)))
    order = sorted(range(len(records)), key=lambda i: (content_hash([seed, records[i]["id"]]), i))
    return set(order[:k])


def cross_entropy(logits: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
    """Mean cross-entropy over target tokens, in fp32 (what Hugging Face's ``loss`` is): the default loss."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float(), targets)


class Method:
    """A training method. The base class is standard fine-tuning's behaviour: one label task, weight 1, and the
    token-mean cross-entropy."""

    name: ClassVar[str]
    Settings: ClassVar[type[MethodSettings]] = MethodSettings  # its settings class (its schema)
    tunables: ClassVar[tuple[str, ...]] = ()  # the fields of Settings that params.yaml may set
    fixed: ClassVar[Mapping[str, Any]] = {}  # the settings it fixes (finetune trains on gold labels)
    rationale_in_label: ClassVar[bool] = False  # the label target carries the rationale (single_task)

    def predict_source(self, record: dict[str, Any], separator: str | None) -> str:
        """The text the student sees when asked for a label (also at test time)."""
        return student_text(record, separator)

    def example(self, record: dict[str, Any], label: str, separator: str | None, stats: RowStats) -> TextExample | None:
        """The training example of one record with its label (None: the record cannot be used)."""
        return TextExample(self.predict_source(record, separator), label)

    def examples(self, records: list[dict[str, Any]], cfg: MethodSettings, separator: str | None,
                 seed: int = 0, answer_type: str = "choice") -> tuple[list[TextExample], RowStats]:
        """Text examples from corpus records, with counts of what was dropped and why; ``seed`` and
        ``answer_type`` (how a teacher label is judged) serve methods that choose among the rationales."""
        stats = RowStats(examples=len(records))
        pairs: list[tuple[dict[str, Any], TextExample]] = []
        for rec in records:
            label = target_label(rec, cfg)
            if label is None:
                stats.drop("teacher label unparsed")
                continue
            ex = self.example(rec, label, separator, stats)
            if ex is not None:
                pairs.append((rec, ex))
        self.choose_rationales(pairs, cfg, seed, answer_type, stats)
        stats.used = len(pairs)
        stats.with_rationale = sum(ex.rationale_target is not None or self.rationale_in_label for _, ex in pairs)
        return [ex for _, ex in pairs], stats

    def choose_rationales(self, pairs: list[tuple[dict[str, Any], TextExample]], cfg: MethodSettings, seed: int,
                          answer_type: str, stats: RowStats) -> None:
        """Take the rationale task away from the examples a method's settings leave without one (in place,
        counted in ``stats``); by default every parsed rationale is kept."""

    def units(self, cfg: MethodSettings, step: int, batch: Sequence[int], label_rows: Sequence[R],
              rationale_rows: Mapping[int, R], grad_accum: int = 1) -> Units:
        """The task sub-batches of one micro-batch at optimizer step ``step`` and their loss weights, divided
        by ``grad_accum`` so that accumulated micro-batches add up to one step's loss."""
        return [([label_rows[i] for i in batch], 1.0 / grad_accum)]

    def loss(self, cfg: MethodSettings, logits: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        """One task sub-batch's loss from the logits at its target positions (rows: tokens) and those tokens."""
        return cross_entropy(logits, targets)

    def read_label(self, text: str) -> str:
        """The label in a decoded output."""
        return text.strip()

    def rationales(self, explain: Callable[[list[str]], list[str]], records: list[dict[str, Any]],
                   outputs: list[str], separator: str | None) -> list[str | None]:
        """Rationales to show beside predictions; ``explain(sources)`` decodes what the student writes for
        inputs of the method's making."""
        return [None] * len(records)  # trained without rationales: nothing to show
