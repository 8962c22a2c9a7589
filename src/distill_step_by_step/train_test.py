"""One grid cell end to end, as the ``train_test`` stage runs it: train the student (best checkpoint by
validation accuracy), score that checkpoint on test, then keep or drop its weights.

Training and testing are one stage so that a cell's weights need not be a DVC output: with
``train.keep_weights: false`` a cell leaves its predictions, metrics, validation curve, ``student.json``
and training curves, and no checkpoint (the GPU grid's 288 checkpoints would not fit a GPU machine's
disk, nor come back from it). The resumable training state is removed only once the cell is complete, so a kill during test
decoding does not cost the training.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from .cell import CURVE_FILE, Cell
from .evaluation import evaluate_cell
from .jsonio import write_json
from .settings import Settings
from .students import drop_weights
from .training import state_dir, train_cell


def train_and_test(settings: Settings, cell: Cell, model_dir: str | Path, results_dir: str | Path, *,
                   corpus_root: str | Path = "data/corpus", splits_root: str | Path = "data/splits",
                   test_sets: str | Path = "data/test_sets", state_root: str | Path = ".resume") -> dict[str, Any] | None:
    """Train and test one cell; returns the test metrics (``None`` on the processes of a multi-GPU launch
    other than the main one, which only train)."""
    summary = train_cell(settings, cell, model_dir, corpus_root=corpus_root, splits_root=splits_root,
                         state_root=state_root, keep_state=True)
    if not PartialState().is_main_process:
        return None
    write_json(Path(results_dir) / CURVE_FILE, summary["history"])  # the report shows whether training had flattened
    gc.collect()  # the training's model and optimizer, before the test decoding loads the best checkpoint
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    metrics = evaluate_cell(cell, settings.evaluate, model_dir, results_dir, corpus_root=corpus_root,
                            test_sets=test_sets)
    if not settings.train.keep_weights:
        drop_weights(model_dir)
    shutil.rmtree(state_dir(model_dir, state_root), ignore_errors=True)
    return metrics
