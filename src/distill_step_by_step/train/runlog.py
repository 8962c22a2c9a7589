"""The run log: what a stage run measured about itself (times, host, resumption), kept apart from its outputs.

A stage's outputs depend on its inputs alone, so that re-running a pipeline changes no committed file; the
clock and the machine go here instead, one JSON line per event in ``logs/<cell's model path>/runs.jsonl``
(git- and DVC-ignored), with the training-loss curve (dvclive) beside it. The grid's workers read it for
cell times (:mod:`..ops.grid`), the benchmarks for step costs.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOG_ROOT = Path(os.environ.get("DSS_LOG_ROOT", "logs"))
RUNS_FILE = "runs.jsonl"


def run_log_dir(model_dir: str | Path) -> Path:
    """Where the run log of the cell whose checkpoint goes to ``model_dir`` is kept."""
    return LOG_ROOT / Path(model_dir)


def log_event(model_dir: str | Path, event: str, **fields: Any) -> None:
    """Append one event (``started``, ``trained``, ``finished``...) to the cell's run log, flushed at once."""
    path = run_log_dir(model_dir) / RUNS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"event": event, "time": round(time.time(), 3), "host": socket.gethostname(), "pid": os.getpid(), **fields}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def read_events(model_dir: str | Path) -> list[dict[str, Any]]:
    """The cell's logged events, oldest first (a line torn by a kill is skipped)."""
    return read_run_log(run_log_dir(model_dir) / RUNS_FILE)


def read_run_log(path: Path) -> list[dict[str, Any]]:
    """The events of one ``runs.jsonl`` file, oldest first; none if it is missing, a torn line skipped."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
