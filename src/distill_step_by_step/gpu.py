"""One GPU per job for queued experiments (``dvc queue start -j N``).

With ``DSS_GPUS=0,1,2,3`` in the environment, each stage process takes an exclusive lock on the first
free GPU of that list and sets ``CUDA_VISIBLE_DEVICES`` to it before torch is imported; the lock is
released when the process ends. Without ``DSS_GPUS`` (or with ``CUDA_VISIBLE_DEVICES`` already set) it
does nothing. Which GPU ran a cell is not a parameter: results do not depend on it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from typing import IO

_held: IO[str] | None = None


def claim_gpu(poll_seconds: float = 5.0) -> str | None:
    """Lock a free GPU from ``DSS_GPUS`` for this process (waiting while all are busy); returns its id."""
    global _held
    pool = [g.strip() for g in os.environ.get("DSS_GPUS", "").split(",") if g.strip()]
    if not pool or "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    while True:
        for gid in pool:
            fh = open(os.path.join(tempfile.gettempdir(), f"dss-gpu-{gid}.lock"), "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            _held = fh  # kept open: the lock lives as long as this process
            os.environ["CUDA_VISIBLE_DEVICES"] = gid
            return gid
        time.sleep(poll_seconds)
