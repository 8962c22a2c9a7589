"""Distilling step-by-step: ``predict: input`` -> label and ``explain: input`` -> the teacher's rationale,
trained together with loss ``alpha * L_label + (1 - alpha) * L_rationale``; labels gold or the teacher's. At
test time only ``predict:`` runs.

Two rationale-quality ablations are its settings (README "Rationale ablations and method variants"): ``rationales: teacher_correct``
keeps only the rationales whose teacher label is right, and ``rationale_fraction`` gives the rationale task to
that share of the training examples, drawn with the seed (nested: a smaller share is part of a larger one).
Every example keeps its label task. At their defaults (``all``, 1.0) the method is the paper's."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..data.datasets import student_text
from ..data.scoring import is_correct
from ..schema import setting
from .method import Method, MethodSettings, R, RowStats, TextExample, Units, drawn, has_rationale
from .registry import register

PREDICT_PREFIX = "predict: "
EXPLAIN_PREFIX = "explain: "


def explain_source(record: dict[str, Any], separator: str | None) -> str:
    """The text the student sees when asked for a rationale."""
    return EXPLAIN_PREFIX + student_text(record, separator)


def teacher_label_correct(record: dict[str, Any], answer_type: str) -> bool:
    """Whether the teacher's label of a record is right, judged as a student's answer would be."""
    return bool(record.get("teacher_ok")) and is_correct(answer_type, record.get("teacher_label"), record["label"])


@dataclass(frozen=True)
class StepByStepSettings(MethodSettings):
    """``methods.step_by_step``: alpha, labels and the rationale ablations."""

    rationales: str = setting("all", choices=("all", "teacher_correct"))  # which parsed rationales are trained on
    rationale_fraction: float = setting(1.0, ge=0, le=1)  # the share of training examples given the rationale task
    quiet_defaults: ClassVar[tuple[str, ...]] = ("rationales", "rationale_fraction")


class StepByStep(Method):
    name, tunables = "step_by_step", ("alpha", "labels", "rationales", "rationale_fraction")
    Settings = StepByStepSettings

    def predict_source(self, record: dict[str, Any], separator: str | None) -> str:
        return PREDICT_PREFIX + student_text(record, separator)

    def example(self, record: dict[str, Any], label: str, separator: str | None, stats: RowStats) -> TextExample:
        ex = TextExample(self.predict_source(record, separator), label)
        if has_rationale(record):
            ex.rationale_source, ex.rationale_target = explain_source(record, separator), record["rationale"]
        else:
            stats.drop("rationale unparsed (label task kept)")
        return ex

    def choose_rationales(self, pairs: list[tuple[dict[str, Any], TextExample]], cfg: MethodSettings, seed: int,
                          answer_type: str, stats: RowStats) -> None:
        assert isinstance(cfg, StepByStepSettings)
        chosen = drawn([rec for rec, _ in pairs], cfg.rationale_fraction, seed) if cfg.rationale_fraction < 1 else None
        for i, (rec, ex) in enumerate(pairs):
            if ex.rationale_target is None:
                continue
            if chosen is not None and i not in chosen:
                stats.drop("rationale not drawn (rationale_fraction; label task kept)")
            elif cfg.rationales == "teacher_correct" and not teacher_label_correct(rec, answer_type):
                stats.drop("rationale's teacher label wrong (label task kept)")
            else:
                continue
            ex.rationale_source = ex.rationale_target = None

    def units(self, cfg: MethodSettings, step: int, batch: Sequence[int], label_rows: Sequence[R],
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

    def rationales(self, explain: Callable[[list[str]], list[str]], records: list[dict[str, Any]],
                   outputs: list[str], separator: str | None) -> list[str | None]:
        return list(explain([explain_source(r, separator) for r in records]))


register(StepByStep())
