"""Distilling step-by-step: ``predict: input`` -> label and ``explain: input`` -> the teacher's rationale,
trained together with loss ``alpha * L_label + (1 - alpha) * L_rationale``; labels gold or the teacher's. At
test time only ``predict:`` runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..data.datasets import student_text
from .method import Method, MethodSettings, R, RowStats, TextExample, Units, has_rationale
from .registry import register

PREDICT_PREFIX = "predict: "
EXPLAIN_PREFIX = "explain: "


def explain_source(record: dict[str, Any], separator: str | None) -> str:
    """The text the student sees when asked for a rationale."""
    return EXPLAIN_PREFIX + student_text(record, separator)


class StepByStep(Method):
    name, tunables = "step_by_step", ("alpha", "labels")

    def predict_source(self, record: dict[str, Any], separator: str | None) -> str:
        return PREDICT_PREFIX + student_text(record, separator)

    def example(self, record: dict[str, Any], label: str, separator: str | None, stats: RowStats) -> TextExample:
        ex = TextExample(self.predict_source(record, separator), label)
        if has_rationale(record):
            ex.rationale_source, ex.rationale_target = explain_source(record, separator), record["rationale"]
        else:
            stats.drop("rationale unparsed (label task kept)")
        return ex

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
