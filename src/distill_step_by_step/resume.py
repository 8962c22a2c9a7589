"""A cell's resumable training state on disk: kill a run at any moment and start it again to continue.

Every ``run.save_every`` steps (by default: at the first validation after each ``run.save_every_minutes``)
the full state (weights, optimizer, scheduler, RNG, data position, best-so-far, the validation curve so
far) is written atomically, and the best weights whenever they improve; starting the same cell again
continues from there and ends exactly where an uninterrupted run ends. A state written for other
settings, data or code is ignored.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from .jsonio import code_fingerprint, content_hash
from .settings import MethodConfig, RunConfig, StudentConfig, TrainConfig


@dataclass
class TrainState:
    """Where a cell's training stands: what a resumed run continues from."""

    fingerprint: str
    step: int = 0
    epoch: int = 0
    pos: int = 0  # the next batch of this epoch's order
    best_accuracy: float = -1.0
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0  # measured, for the run log only
    curve: list[dict[str, Any]] = field(default_factory=list)  # {step, valid_accuracy, loss} at each validation

    def done(self, cfg: TrainConfig) -> bool:
        return self.step >= cfg.max_steps or self.stopped_early



class Resume:
    """A cell's resumable state on disk: the latest full state, the best weights and the training curve.

    States are written under a temporary name and swapped in with two renames (:meth:`recover` finishes
    a swap a kill interrupted), so a kill at any moment keeps the last complete state.
    """

    def __init__(self, root: str | Path, fingerprint: str):
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.ckpt = self.root / "checkpoint"
        self.best = self.root / "best"
        self.live = self.root / "dvclive"

    @classmethod
    def for_cell(cls, root: str | Path, student_cfg: StudentConfig, method: MethodConfig, cfg: TrainConfig, seed: int,
                 world: int, identity: list[Any]) -> "Resume":
        """A cell's state, keyed on all that decides what its training computes: the student, the method,
        the training settings, the seed, the number of processes, the examples and the package's code
        (the ``run`` settings are not among them: they change no result)."""
        return cls(root, content_hash([student_cfg, asdict(method), asdict(cfg), seed, world, identity, code_fingerprint()]))

    def saved_state(self) -> TrainState | None:
        """The saved state, if there is one for these settings, data and code."""
        path = self.ckpt / "trainer_state.json"
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        return TrainState(**state) if state.get("fingerprint") == self.fingerprint else None

    def start(self, accelerator: Accelerator) -> tuple[TrainState, bool]:
        """Load the saved state into the prepared objects, or start over; returns (state, resumed)."""
        if accelerator.is_main_process:
            self.recover()
        accelerator.wait_for_everyone()
        state = self.saved_state()
        if state is not None:
            accelerator.load_state(str(self.ckpt))
            if accelerator.is_main_process:  # the curve as it was at the save: steps after it are redone
                shutil.rmtree(self.live, ignore_errors=True)
                shutil.copytree(self.ckpt / "dvclive", self.live)
        elif accelerator.is_main_process and self.root.exists():
            shutil.rmtree(self.root)  # a state for other settings, data or code
        accelerator.wait_for_everyone()
        return (state, True) if state is not None else (TrainState(self.fingerprint), False)

    def save(self, accelerator: Accelerator, state: TrainState) -> None:
        """Write the full training state (and the curve so far) under a temporary name, then swap it in."""
        tmp = self.ckpt.with_name("checkpoint.tmp")
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            if self.live.exists():
                shutil.copytree(self.live, tmp / "dvclive")
            (tmp / "trainer_state.json").write_text(json.dumps(asdict(state)))  # written last: marks it complete
            self.swap_in(tmp, self.ckpt)
        accelerator.wait_for_everyone()

    def save_best(self, model: torch.nn.Module, step: int, accuracy: float) -> None:
        """Keep these weights as the best so far (main process only)."""
        tmp = self.best.with_name("best.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "best.json").write_text(json.dumps({"step": step, "valid_accuracy": accuracy}))
        self.swap_in(tmp, self.best)

    def swap_in(self, tmp: Path, final: Path) -> None:
        """Replace ``final`` by the complete ``tmp`` with two renames (``recover`` finishes a killed swap)."""
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)  # left over by a kill during the clean-up of an earlier swap
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    def recover(self) -> None:
        """Finish a swap that a kill interrupted between its two renames, so no saved work is lost.

        ``final`` missing while ``final.old`` exists means the kill came after the first rename; ``tmp``
        was already complete then (a swap starts only after it is written), so it becomes ``final``.
        """
        for final in (self.ckpt, self.best):
            old, tmp = final.with_name(final.name + ".old"), final.with_name(final.name + ".tmp")
            if old.exists() and not final.exists():
                os.replace(tmp if tmp.exists() else old, final)
            shutil.rmtree(old, ignore_errors=True)

    def due(self, accelerator: Accelerator, cfg: RunConfig, step: int, evaluating: bool, seconds_since_save: float) -> bool:
        """Whether to write a state now: every ``save_every`` steps, or (by default) at an evaluation once
        ``save_every_minutes`` have passed, so short CPU cells spend no time on states."""
        if cfg.save_every:
            return step % cfg.save_every == 0
        if not evaluating:
            return False
        decision = seconds_since_save >= 60.0 * cfg.save_every_minutes
        if accelerator.num_processes == 1:
            return decision
        # a time-based decision can differ between processes, and one would then wait in the save's barrier alone
        flag = torch.tensor(float(decision), device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="max"))
