"""GPU slots for queued experiments (``dvc queue start -j N``): several small cells may share one GPU.

With ``DSS_GPUS=0,1`` in the environment each ``train_score`` process takes an exclusive lock on a
free *slot* and sets ``CUDA_VISIBLE_DEVICES`` to that slot's GPU before torch is imported; the lock is
released when the process ends. ``DSS_JOBS_PER_GPU=K`` (default 1) gives every GPU K slots: one small
cell leaves a GPU mostly idle, several at once keep it busy. Slots fill breadth-first (GPU 0, GPU 1,
GPU 0, ...), so jobs spread over the GPUs before they double up; when every slot is taken a process waits.
Without ``DSS_GPUS`` (or with ``CUDA_VISIBLE_DEVICES`` already set) nothing happens. Which GPU ran a cell
is not a parameter: results do not depend on it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from typing import IO

_held: IO[str] | None = None


def gpu_slots(environ: dict[str, str] | None = None) -> list[tuple[str, int]]:
    """The (GPU id, slot) pairs ``DSS_GPUS`` and ``DSS_JOBS_PER_GPU`` define, in the order they are taken."""
    env = os.environ if environ is None else environ
    gpus = [g.strip() for g in env.get("DSS_GPUS", "").split(",") if g.strip()]
    raw = env.get("DSS_JOBS_PER_GPU", "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"DSS_JOBS_PER_GPU must be a whole number >= 1, got {raw!r}")
    return [(gpu, slot) for slot in range(int(raw)) for gpu in gpus]


def _lock_path(gpu: str, slot: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"dss-gpu-{gpu}-slot{slot}.lock")


def claim_gpu(poll_seconds: float = 2.0) -> str | None:
    """Lock a free GPU slot for this process (waiting while all are taken); returns its GPU id."""
    global _held
    try:
        slots = gpu_slots()
    except ValueError as exc:  # stages call this before their error handling starts: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
    if not slots or "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    while True:
        for gpu, slot in slots:
            fh = open(_lock_path(gpu, slot), "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            _held = fh  # kept open: the lock lives as long as this process
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            return gpu
        time.sleep(poll_seconds)
