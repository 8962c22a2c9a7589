"""One grid cell end to end, as the ``train_score`` stage runs it: train the student (best checkpoint by
validation accuracy), score that checkpoint on test, then keep or drop its weights.

Training and scoring are one stage so that a cell's weights need not be kept: with ``run.keep_weights:
false`` a cell leaves its record (``student.json``), predictions, metrics and validation curve, and of its
checkpoint only the config (the GPU grid's 288 checkpoints would not fit a GPU machine's disk, nor come
back from it). The resumable training state is removed only once the cell is complete, so a kill during
test decoding does not cost the training. What the run measured (times, host) goes to the run log.
"""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from ..jsonio import write_json
from ..settings import Settings
from ..students.student import drop_weights
from .cell import CURVE_FILE, RECORD_FILE, Cell
from .inference import score_cell
from .runlog import log_event, run_log_dir
from .training import state_dir, train_cell


def train_and_score(settings: Settings, cell: Cell, model_dir: str | Path, results_dir: str | Path, *,
                    data_root: str | Path = "data", state_root: str | Path = ".resume") -> dict[str, Any] | None:
    """Train and test one cell; returns the test metrics (``None`` on the processes of a multi-GPU launch
    other than the main one, which only train)."""
    start = time.perf_counter()
    if not torch.cuda.is_available():
        # How many threads split a sum changes its last bits, and over a training run the numbers: one thread on
        # every machine, so a cell trained again anywhere gives the same bytes (README "Resuming")
        torch.set_num_threads(1)
    main = PartialState().is_main_process
    if main:
        log_event(model_dir, "started", cell=cell.name)
    trained = train_cell(settings, cell, model_dir, data_root=data_root, state_root=state_root, keep_state=True,
                         log_dir=run_log_dir(model_dir))
    if not main:
        return None
    log_event(model_dir, "trained", **trained.timings)
    write_json(Path(results_dir) / RECORD_FILE, trained.record)
    write_json(Path(results_dir) / CURVE_FILE, trained.curve)  # the report shows whether training had flattened
    gc.collect()  # the training's model and optimizer, before the test decoding loads the best checkpoint
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    decode_start = time.perf_counter()
    metrics = score_cell(cell, settings.method(cell.method), model_dir, results_dir, trained.record, data_root=data_root,
                         batch_size=settings.run.test_batch_size, rationales=settings.test.rationales)
    decode_seconds = time.perf_counter() - decode_start
    if not settings.run.keep_weights:
        drop_weights(model_dir)
    shutil.rmtree(state_dir(model_dir, state_root), ignore_errors=True)
    log_event(model_dir, "finished", cell=cell.name, seconds=round(time.perf_counter() - start, 2),
              decode_seconds=round(decode_seconds, 2), test_examples=metrics["n"])
    return metrics
