"""A grid cell: (dataset, method, student, fraction, seed), where its outputs live and which records it uses.

The ``train_score`` stage (``train_score.train_and_score``: ``training.train_cell``, then
``inference.score_cell``), the report and the grid's workers find a cell's files through :class:`Cell`;
``dvc.yaml`` spells the same paths for DVC (``tests/test_stage_deps.py`` checks that the two agree).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.corpus import read_corpus
from ..data.splits import fraction_text, train_ids_path, valid_ids_path
from ..errors import DataError, StageError
from ..jsonio import read_lines

STAGE, VARIANT_STAGE = "train_score", "train_variant"  # dvc.yaml's stages of cells: methods', variants'
MODELS_ROOT = "models"
RESULTS_ROOT = "results/demo"
# A cell's results folder, all small and kept in git:
RECORD_FILE = "student.json"  # what was trained and how: settings, counts, size, the chosen checkpoint
CURVE_FILE = "valid_curve.json"  # [{step, valid_accuracy, valid_n, loss}] at each validation
METRICS_FILE = "metrics.json"  # the test scores (and the record's fields the report needs)
PREDICTIONS_FILE = "predictions.jsonl"  # one line per test example: id, prediction, gold, correct, exact
# Set by the grid's workers and assemblies (ops/grid.py): a grid's cells train only under a worker.
WORKER_ENV, ASSEMBLE_ENV = "DSS_WORKER", "DSS_ASSEMBLE"
GRIDS_DIR = "grids"


@dataclass(frozen=True)
class Cell:
    """One cell of the grid; its names and paths spell the fraction as ``fraction_text`` does (``0.25``)."""

    dataset: str
    method: str
    student: str
    fraction: float
    seed: int
    # its method is a variant (grid.variants), trained by the stage train_variant
    variant: bool = field(default=False, compare=False)

    @property
    def stage(self) -> str:
        """The cell's stage name in ``dvc.yaml`` (``train_score@<dataset>-<method>-<student>-<fraction>-<seed>``;
        a variant's, ``train_variant@...``)."""
        family = VARIANT_STAGE if self.variant else STAGE
        return f"{family}@{self.dataset}-{self.method}-{self.student}-{fraction_text(self.fraction)}-{self.seed}"

    @property
    def name(self) -> str:
        """``<dataset>/<method>/<student>/f<fraction>-s<seed>``: the cell's path below models/ and results/."""
        return f"{self.dataset}/{self.method}/{self.student}/f{fraction_text(self.fraction)}-s{self.seed}"

    def model_dir(self, root: str | Path = MODELS_ROOT) -> Path:
        """Where the ``train_score`` stage writes the cell's checkpoint."""
        return Path(root) / self.name

    def results_dir(self, root: str | Path = RESULTS_ROOT) -> Path:
        """Where the ``train_score`` stage writes the cell's record, predictions, metrics and curve."""
        return Path(root) / self.name

    @staticmethod
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        """The cell's coordinates as command-line options (how ``dvc.yaml`` passes them to a stage)."""
        for name in ("dataset", "method", "student"):
            ap.add_argument(f"--{name}", required=True)
        ap.add_argument("--fraction", type=float, required=True, help="a fraction of grid.fractions, e.g. 0.25")
        ap.add_argument("--seed", type=int, required=True)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Cell":
        """The cell that :meth:`add_arguments` options name."""
        return cls(args.dataset, args.method, args.student, args.fraction, args.seed)

    def info(self) -> dict[str, Any]:
        """The cell's coordinates as recorded in ``student.json``."""
        return {"dataset": self.dataset, "method": self.method, "student": self.student,
                "fraction": self.fraction, "seed": int(self.seed), "cell": self.name}


def check_may_train(params_path: str | Path, cell: Cell) -> None:
    """Stop a grid's cell from training outside one of its workers, and under an assembly at all: a plain
    ``dvc repro`` in ``grids/<profile>/`` must not retrain the cells the grid keeps (see ``ops/grid.py``)."""
    if os.environ.get(ASSEMBLE_ENV):
        raise StageError(f"{cell.name}: not finished in the remote, and an assembly trains nothing "
                         "(`python -m distill_step_by_step.grid work` trains it)")
    if Path(params_path).parts[:1] == (GRIDS_DIR,) and not os.environ.get(WORKER_ENV):
        raise StageError(f"{cell.name}: a grid's cells are trained by its workers (python -m distill_step_by_step.grid "
                         "work <profile>), so that `dvc repro` in a grid cannot retrain the cells it keeps")


def select(records: list[dict[str, Any]], ids_path: str | Path) -> list[dict[str, Any]]:
    """The records named in an id manifest, in manifest order; unknown ids are an error."""
    by_id = {r["id"]: r for r in records}
    ids = read_lines(ids_path)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{len(missing)} ids not in the corpus (first: {missing[0]!r})", path=str(ids_path),
                        hint="the split manifests are older than the corpus: run `dvc repro`")
    return [by_id[i] for i in ids]


def training_records(cell: Cell, corpus_root: str | Path, splits_root: str | Path) -> tuple[list[dict], list[dict]]:
    """The cell's training fraction and the dataset's shared validation set."""
    pool = read_corpus(Path(corpus_root) / cell.dataset, "train")
    splits = Path(splits_root) / cell.dataset
    return select(pool, train_ids_path(splits, cell.seed, cell.fraction)), select(pool, valid_ids_path(splits))


def test_records(dataset: str, corpus_root: str | Path, test_sets: str | Path) -> list[dict[str, Any]]:
    """The test examples every cell of ``dataset`` (and the teacher baseline) is scored on."""
    return select(read_corpus(Path(corpus_root) / dataset, "test"), test_ids_path(test_sets, dataset))


def test_ids_path(test_sets: str | Path, dataset: str) -> Path:
    """The test manifest of a dataset (``data/test_sets/<dataset>.ids``)."""
    return Path(test_sets) / f"{dataset}.ids"
