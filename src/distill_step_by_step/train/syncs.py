"""Counting the operations that make the host wait for the device (measured on any device, CPU included).

On a GPU the host queues work ahead of the device; an operation whose result the host must read (a
tensor's value in Python, the size of a boolean mask's selection, ``torch.equal``...) waits until the
device has caught up, and a training step with such waits leaves the GPU idle in between. They are
visible at the dispatcher whatever the device, so :class:`SyncCounter` counts them on the CPU too: the
tests keep the training step at zero, and the benchmarks report the count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# aten ops whose result the host reads, or whose output size depends on tensor values
SYNC_OPS = frozenset({
    "aten::_local_scalar_dense",  # .item(), float(t), int(t), bool(t)
    "aten::is_nonzero",
    "aten::equal",
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::unique_consecutive",
    "aten::_unique2",
    "aten::repeat_interleave",  # without output_size
    "aten::allclose",
})


class SyncCounter(TorchDispatchMode):
    """Count host-device synchronising operations run while active (``with SyncCounter() as c: ...``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = func._schema.name
        if name in SYNC_OPS:
            self.counts[name] += 1
        elif name == "aten::index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                           for i in (args[1] if len(args) > 1 else ())):
            self.counts["aten::index (boolean mask)"] += 1  # the selection's size is read from the device
        return func(*args, **(kwargs or {}))
