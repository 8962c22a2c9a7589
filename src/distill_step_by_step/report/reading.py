"""What the report is made of, all read from files other stages wrote: the grid's finished cells (scores,
per-example correctness and answers), the teacher's answers on the same test examples, and each grid point's
validation curve averaged over its seeds."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..jsonio import read_json, read_jsonl
from ..settings import GridConfig
from ..train.cell import CURVE_FILE, METRICS_FILE, PREDICTIONS_FILE, Cell

TEACHER = "teacher"  # the teacher's folder under the reports, and the `against` of a comparison with it
CELL_COLUMNS = ["dataset", "method", "student", "params_m", "fraction", "n_train", "seed", "accuracy", "exact_accuracy",
                "n_test"]


def grid_cells(grid: GridConfig) -> list[Cell]:
    return [Cell(d, m, s, f, seed, m in grid.variants) for d, m, s, f, seed in grid.cells()]


def missing_cells(results_root: str | Path, grid: GridConfig) -> list[Cell]:
    """The grid's cells that have no results yet."""
    return [c for c in grid_cells(grid) if not (c.results_dir(results_root) / METRICS_FILE).is_file()]


CellKey = tuple[str, str, str, float, int]  # (dataset, method, student, fraction, seed)


@dataclass(frozen=True)
class Answers:
    """One test set's answers in example order: what was predicted (None: nothing readable) and the gold."""

    predictions: list[str | None]
    golds: list[str]


@dataclass
class GridResults:
    """What the report is made from: the finished cells, each one's per-example correctness and answers, the
    teacher's."""

    cells: pd.DataFrame  # CELL_COLUMNS, one row per finished cell
    correct: dict[CellKey, np.ndarray]  # 0/1 per test example
    teacher: pd.DataFrame  # dataset, accuracy, exact_accuracy, n_test: on the students' test examples
    teacher_correct: dict[str, np.ndarray]
    missing: list[Cell]
    answers: dict[CellKey, Answers] = field(default_factory=dict)
    teacher_answers: dict[str, Answers] = field(default_factory=dict)


def collect(results_root: str | Path, reports_root: str | Path, grid: GridConfig) -> GridResults:
    """Read every finished cell of the grid and the teacher's answers on the same test examples."""
    rows, correct, answers = [], {}, {}
    for cell in grid_cells(grid):
        folder = cell.results_dir(results_root)
        if not (folder / METRICS_FILE).is_file():
            continue
        m = read_json(folder / METRICS_FILE)
        info = m.get("record", {})
        key = (cell.dataset, cell.method, cell.student, cell.fraction, int(cell.seed))
        rows.append({"dataset": cell.dataset, "method": cell.method, "student": cell.student,
                     "params_m": info.get("params_m"), "fraction": key[3], "n_train": info.get("n_train"),
                     "seed": key[4], "accuracy": m["accuracy"], "exact_accuracy": m.get("exact_accuracy"),
                     "n_test": m["n"]})
        correct[key], answers[key] = read_predictions(folder / PREDICTIONS_FILE, m["n"])
    cells = pd.DataFrame(rows, columns=CELL_COLUMNS).astype({"n_train": "Int64", "seed": "Int64", "n_test": "Int64"})
    baseline = read_json(Path(reports_root) / "baseline.json")
    teacher, teacher_correct, teacher_answers = [], {}, {}
    for dataset in grid.datasets:
        if dataset not in baseline:
            raise DataError(f"no teacher baseline for {dataset!r}", path=str(Path(reports_root) / "baseline.json"),
                            hint="run `dvc repro baseline`")
        b = baseline[dataset]
        teacher.append({"dataset": dataset, "accuracy": b["accuracy"], "exact_accuracy": b.get("exact_accuracy"),
                        "n_test": b["n"]})
        teacher_correct[dataset], teacher_answers[dataset] = read_predictions(
            Path(reports_root) / TEACHER / f"{dataset}.jsonl", b["n"])
    return GridResults(cells, correct, pd.DataFrame(teacher), teacher_correct, missing_cells(results_root, grid),
                       answers, teacher_answers)


def read_predictions(path: Path, n: int) -> tuple[np.ndarray, Answers]:
    """A ``predictions.jsonl`` (a cell's, or the teacher's): 0/1 correctness per example and the answers; it must
    hold the ``n`` examples its scores count."""
    rows = read_jsonl(path)
    if len(rows) != n:
        raise DataError(f"{len(rows)} predictions where the scores count {n}", path=str(path),
                        hint="the predictions and metrics come from different runs: run `dvc repro`")
    correct = np.array([bool(r["correct"]) for r in rows], dtype=np.float32)
    return correct, Answers([r.get("prediction") for r in rows], [str(r.get("gold", "")) for r in rows])


@dataclass
class Curve:
    """The validation curve of one (dataset, method, student, fraction), averaged over its seeds."""

    dataset: str
    method: str
    student: str
    fraction: float
    steps: list[int]
    accuracies: list[float]

    def late_gain(self) -> float:
        """How much the best validation accuracy (the checkpoint selection keeps) rose over the last quarter
        of training: zero once it has flattened. The best, not the last, so that one noisy dip before the
        last quarter does not count as a gain."""
        last = self.steps[-1]
        before = [a for s, a in zip(self.steps, self.accuracies) if s <= 0.75 * last] or self.accuracies[:1]
        return max(self.accuracies) - max(before)


def collect_curves(results_root: str | Path, grid: GridConfig) -> list[Curve]:
    """Every grid point's validation curve (mean over seeds at the steps all its seeds validated at)."""
    runs: dict[tuple[str, str, str, float], list[dict[int, float]]] = {}
    for cell in grid_cells(grid):
        path = cell.results_dir(results_root) / CURVE_FILE
        if path.is_file():
            key = (cell.dataset, cell.method, cell.student, cell.fraction)
            runs.setdefault(key, []).append({p["step"]: p["valid_accuracy"] for p in read_json(path)})
    curves = []
    for (dataset, method, student, fraction), seeds in runs.items():
        steps = sorted(set.intersection(*(set(s) for s in seeds)))
        if steps:
            curves.append(Curve(dataset, method, student, fraction, steps,
                                [statistics.fmean(s[step] for s in seeds) for step in steps]))
    return curves
