"""Per-class results for the datasets whose answers come from a closed set of labels: a confusion matrix and
each class's recall per (method, student, fraction) and for the teacher, with scikit-learn's metrics.

Which datasets have one is decided by their answer type (``DatasetSpec.answer_type``): the NLI datasets
(e-SNLI, ANLI-R1) answer one of three fixed names (``entailment``, ``neutral``, ``contradiction``).
CommonsenseQA's answers are one of five choices, but a choice is the text of the answer, which differs from
question to question: there is no fixed class to count a confusion of. SVAMP's are equations.

A prediction is placed in a class by the lenient rule that scores it (lower-cased, re-spaced), so a cell's
recalls agree with its ``correct`` flags; a prediction that is no class (a student that wrote something
else, or nothing) is counted in a column of its own, ``OTHER``. Over the seeds, the matrix is the sum of the
seeds' matrices and a class's recall is the mean of the seeds' recalls (the seeds share their test set, so the
two agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, recall_score

from ..data.datasets import get_spec
from ..data.parsing import NLI_LABELS
from ..data.scoring import normalise_text
from ..errors import DataError
from ..settings import GridConfig
from .presentation import method_look, pct
from .reading import TEACHER, Answers, GridResults

OTHER = "(other)"  # the predicted-class column of the predictions that are no label of the set
LABEL_SETS: dict[str, tuple[str, ...]] = {"nli": NLI_LABELS}  # answer type -> its labels, in the raw files' order


def class_labels(dataset: str) -> tuple[str, ...] | None:
    """The fixed labels of ``dataset``'s answers, or None where it has no closed label set."""
    return LABEL_SETS.get(get_spec(dataset).answer_type)


def as_class(answer: str | None, labels: Sequence[str]) -> str:
    """The label ``answer`` is under the lenient rule, else ``OTHER``."""
    if answer is None:
        return OTHER
    text = normalise_text(answer)
    return next((label for label in labels if normalise_text(label) == text), OTHER)


def _classes(answers: Answers, labels: Sequence[str], where: str) -> tuple[list[str], list[str]]:
    golds = [as_class(g, labels) for g in answers.golds]
    if OTHER in golds:
        raise DataError(f"a gold label {answers.golds[golds.index(OTHER)]!r} outside {', '.join(labels)}", path=where)
    return golds, [as_class(p, labels) for p in answers.predictions]


def confusion(answers: Answers, labels: Sequence[str], where: str = "") -> np.ndarray:
    """Counts: a row per gold label, a column per predicted label and a last one for ``OTHER``."""
    golds, predictions = _classes(answers, labels, where)
    return confusion_matrix(golds, predictions, labels=[*labels, OTHER])[:-1]


def recalls(answers: Answers, labels: Sequence[str], where: str = "") -> np.ndarray:
    """Each label's recall (NaN for a label no test example has)."""
    golds, predictions = _classes(answers, labels, where)
    return recall_score(golds, predictions, labels=list(labels), average=None, zero_division=np.nan)


@dataclass(frozen=True)
class ClassResult:
    """One (dataset, method, student, fraction)'s per-class results over its seeds, or the teacher's."""

    dataset: str
    method: str
    student: str
    fraction: float | None  # None: the teacher
    seeds: int
    labels: tuple[str, ...]
    matrix: np.ndarray  # summed over the seeds: gold rows, predicted columns (labels, then OTHER)
    recall: np.ndarray  # per label, mean over the seeds

    @property
    def title(self) -> str:
        """How tables and figures name the row: the method's title, or the teacher's."""
        return "teacher (few-shot CoT)" if self.method == TEACHER else method_look(self.method).title


def class_results(res: GridResults, grid: GridConfig, teacher_name: str) -> list[ClassResult]:
    """Every label-set dataset's results per (method, student, fraction), in grid order, then the teacher's."""
    order = {cell[:4]: i for i, cell in enumerate(grid.cells())}
    keys = sorted((k for k in res.correct if k in res.answers), key=lambda k: (order.get(k[:4], len(order)), k))
    points: dict[tuple[str, str, str, float], list[Answers]] = {}
    for key in keys:
        points.setdefault(key[:4], []).append(res.answers[key])
    out = []
    for (dataset, method, student, fraction), seeds in points.items():
        if (labels := class_labels(dataset)) is not None:
            out.append(_result(dataset, method, student, fraction, seeds, labels))
    for dataset, answers in res.teacher_answers.items():
        if (labels := class_labels(dataset)) is not None:
            out.append(_result(dataset, TEACHER, teacher_name, None, [answers], labels))
    return out


def _result(dataset: str, method: str, student: str, fraction: float | None, seeds: list[Answers],
            labels: tuple[str, ...]) -> ClassResult:
    where = f"{dataset}/{method}/{student}" + (f" at {pct(fraction)}" if fraction is not None else "")
    matrix = sum(confusion(a, labels, where) for a in seeds)
    recall = np.mean([recalls(a, labels, where) for a in seeds], axis=0)
    return ClassResult(dataset, method, student, fraction, len(seeds), labels, np.asarray(matrix), recall)


def per_class_table(results: list[ClassResult]) -> pd.DataFrame:
    """``per_class.csv``: a row per (dataset, method, student, fraction, gold label): the gold label's examples
    over the seeds (``n``), its recall (mean over the seeds) and how many of them were predicted as each label
    (``as_<label>``, and ``as_other`` for answers outside the set), summed over the seeds. The teacher's rows
    have the method ``teacher`` and no fraction."""
    rows = []
    for r in results:
        for i, gold in enumerate(r.labels):
            counts = {f"as_{label}": int(c) for label, c in zip(r.labels, r.matrix[i])}
            rows.append({"dataset": r.dataset, "method": r.method, "student": r.student, "fraction": r.fraction,
                         "seeds": r.seeds, "gold": gold, "n": int(r.matrix[i].sum()),
                         "recall": round(float(r.recall[i]), 6), **counts, "as_other": int(r.matrix[i][-1])})
    columns = ["dataset", "method", "student", "fraction", "seeds", "gold", "n", "recall"]
    return pd.DataFrame(rows, columns=columns + [c for c in (rows[0] if rows else {}) if c not in columns])


def recall_markdown(results: list[ClassResult], dataset: str) -> str | None:
    """A dataset's per-class recall table (a row per method, student and fraction, the teacher last), with the
    mean of the recalls (balanced accuracy) and the share of answers outside the set; None without rows."""
    mine = [r for r in results if r.dataset == dataset]
    if not mine:
        return None
    labels = mine[0].labels
    rows = []
    for r in mine:
        outside = r.matrix[:, -1].sum() / max(int(r.matrix.sum()), 1)
        teacher = r.fraction is None
        rows.append([r.title, r.student, "–" if teacher else pct(r.fraction), "–" if teacher else r.seeds,
                     *(_share(v) for v in r.recall), _share(float(np.nanmean(r.recall))), _share(outside)])
    columns = ["method", "student", "fraction", "seeds", *(f"recall: {label}" for label in labels),
               "mean recall", "answers outside the labels"]
    return pd.DataFrame(rows, columns=columns).to_markdown(index=False)


def _share(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.1%}"
