"""A cell's resumable training state on disk: kill a run at any moment and start it again to continue.

Every ``run.save_every`` steps (by default: at the first validation after each ``run.save_every_minutes``)
the full state (weights, optimizer, scheduler, RNG, data position, best-so-far, the validation curve so
far) is written atomically, and the best weights whenever they improve; starting the same cell again
continues from there and ends exactly where an uninterrupted run ends. A state written for other
settings, data or code is ignored.

A state holds no pickle that can run code when read: weights and random generators are safetensors, the
optimizer's tensors are read with ``torch.load(weights_only=True)``, the rest is JSON. Every file is read
and checked against what is being trained before anything is restored; a state that cannot be read back
whole (a torn, truncated or missing file, a tensor that does not fit) is moved aside, never deleted, with
a one-line message naming the file and the reason, and the cell trains from step 0.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import safe_open
from safetensors.torch import load_file, save_file, save_model

from ..code_closure import code_fingerprint
from ..jsonio import content_hash
from ..methods.method import MethodSettings
from ..settings import RunConfig, StudentConfig, TrainConfig

STATE_FILE = "trainer_state.json"  # written last: its presence marks a state complete
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.bin"
SCHEDULE_FILE = "schedule.json"

Restore = Callable[[], None]  # puts back one piece that was read and checked: it cannot fail half-way


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


@dataclass
class Trainables:
    """What a state restores besides :class:`TrainState`: the prepared model, its optimizer and LR schedule."""

    model: torch.nn.Module  # prepared (DDP-wrapped under a multi-process launch)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


class DamagedState(Exception):
    """A file of a saved state that cannot be read back, or does not fit what is being trained."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn any failure while reading and checking ``path`` into a :class:`DamagedState` naming it."""
    try:
        yield
    except DamagedState:
        raise
    except Exception as exc:  # each reader fails its own way on a torn file: JSON, zip, safetensors, torch
        detail = " ".join(str(exc).split())  # one line
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise DamagedState(path, f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__) from exc


def _describe(tensor: torch.Tensor | None) -> str:
    return "none" if tensor is None else f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"


def read_weights(path: Path, model: torch.nn.Module) -> Restore:
    """Weights written by ``save_model``, checked to fit ``model``: every tensor by name, shape and dtype
    (tied tensors are saved under one of their names)."""
    with reading(path):
        saved, current = load_file(path), model.state_dict()
        for name, tensor in saved.items():
            want = current.get(name)
            if want is None or want.shape != tensor.shape or want.dtype != tensor.dtype:
                raise ValueError(f"{name} is {_describe(tensor)}, the model's {_describe(want)}")
        held = {current[name].data_ptr() for name in saved}
        missing = [name for name, tensor in current.items() if tensor.data_ptr() not in held]
        if missing:
            raise ValueError(f"{len(missing)} of the model's tensors are missing, the first {missing[0]}")
    return lambda: model.load_state_dict(saved, strict=False)


def read_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> Restore:
    """The optimizer's state, unpickled as tensors and plain values only, checked to fit its parameters."""
    with reading(path):
        saved = torch.load(path, map_location="cpu", weights_only=True)  # no code runs on load
        groups, current = saved["param_groups"], optimizer.param_groups
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
            raise ValueError("its parameter groups differ from the optimizer's")
        params = dict(zip((i for g in groups for i in g["params"]), (p for g in current for p in g["params"])))
        for i, values in saved["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor) and value.ndim and value.shape != params[i].shape:
                    raise ValueError(f"{key} of parameter {i} is {_describe(value)}, the parameter {_describe(params[i])}")
    return lambda: optimizer.load_state_dict(saved)


def schedule_state(scheduler: torch.optim.lr_scheduler.LambdaLR, scaler: Any) -> dict[str, Any]:
    """The LR schedule's state (plain numbers; ``lr_lambdas`` is None for plain functions) and the fp16
    gradient scaler's, as JSON-able values."""
    return {"lr_scheduler": scheduler.state_dict(), "grad_scaler": scaler.state_dict() if scaler is not None else None}


def _form(value: Any) -> Any:
    """What a JSON-able value's structure is: its keys, lengths and scalar types."""
    if isinstance(value, dict):
        return {k: _form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_form(v) for v in value]
    return type(value).__name__


def read_schedule(path: Path, scheduler: torch.optim.lr_scheduler.LambdaLR, scaler: Any) -> Restore:
    """The LR schedule and gradient scaler states, checked to have the form of the current ones."""
    with reading(path):
        saved = json.loads(path.read_text())
        if _form(saved) != _form(schedule_state(scheduler, scaler)):
            raise ValueError("its entries differ from the schedule's")

    def restore() -> None:
        scheduler.load_state_dict(saved["lr_scheduler"])
        if scaler is not None:
            scaler.load_state_dict(saved["grad_scaler"])
    return restore


def rng_file(rank: int) -> str:
    """The file of one process's random generators."""
    return f"rng_{rank}.safetensors"


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's random generators: torch's (CPU, each GPU) as tensors; Python's and NumPy's as JSON."""
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return tensors, {"python": json.dumps(random.getstate()), "numpy": json.dumps([kind, keys.tolist(), pos, has_gauss, gauss])}


def read_rng(path: Path) -> Restore:
    """Random generator states, each checked by setting it on a spare generator first."""
    with reading(path):
        with safe_open(path, framework="pt") as f:
            meta, tensors = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
        version, internal, gauss = json.loads(meta["python"])
        python = (version, tuple(internal), gauss)
        kind, keys, *rest = json.loads(meta["numpy"])
        numpy = (kind, np.array(keys, dtype=np.uint32), *rest)
        current = rng_state()[0]
        if {k: t.shape for k, t in tensors.items()} != {k: t.shape for k, t in current.items()}:
            raise ValueError(f"it holds generators {sorted(tensors)}, this process has {sorted(current)}")
        random.Random().setstate(python)
        np.random.RandomState().set_state(numpy)
        torch.Generator().set_state(tensors["cpu"])

    def restore() -> None:
        torch.set_rng_state(tensors["cpu"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state_all([tensors[f"cuda{i}"] for i in range(torch.cuda.device_count())])
        random.setstate(python)
        np.random.set_state(numpy)
    return restore


def check_weights_folder(folder: Path) -> None:
    """Raise :class:`DamagedState` unless the folder holds weights and each safetensors file is whole."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise DamagedState(folder, "no weights (*.safetensors) in it")
    for path in files:
        with reading(path), safe_open(path, framework="pt"):  # opening checks the header and the file's length
            pass


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
    def for_cell(cls, root: str | Path, student_cfg: StudentConfig, method: MethodSettings, cfg: TrainConfig, seed: int,
                 world: int, identity: list[Any]) -> "Resume":
        """A cell's state, keyed on all that decides what its training computes: the student, the method,
        the training settings, the seed, the number of processes, the examples and the package's code
        (the ``run`` settings are not among them: they change no result)."""
        return cls(root, content_hash([student_cfg, method.record(), asdict(cfg), seed, world, identity,
                                         code_fingerprint(method=method.name)]))

    def saved_state(self) -> TrainState | None:
        """The saved state, if there is one for these settings, data and code; :class:`DamagedState` if a
        checkpoint is there but its state file is missing or unreadable."""
        if not self.ckpt.exists():
            return None
        path = self.ckpt / STATE_FILE
        with reading(path):
            saved = json.loads(path.read_text())
            return TrainState(**saved) if saved.get("fingerprint") == self.fingerprint else None

    def start(self, accelerator: Accelerator, parts: Trainables) -> tuple[TrainState, bool]:
        """Load the saved state into the prepared objects, or start over; returns (state, resumed).

        A damaged state found by any process is set aside, and then every process starts over together."""
        main = accelerator.is_main_process
        if main:
            self.recover()
        accelerator.wait_for_everyone()
        problem, restores = None, []
        try:
            state = self.saved_state()
            if state is not None:
                restores = self.read(accelerator, parts, state)
        except DamagedState as exc:
            state, problem = None, (str(exc.path), exc.reason)
        damaged = [p for p in gather_object([problem]) if p is not None]
        if damaged:
            state, restores = None, []
            if main:
                self.set_aside(*damaged[0])
        for restore in restores:
            restore()
        if main and state is not None:  # the curve as it was at the save: steps after it are redone
            shutil.rmtree(self.live, ignore_errors=True)
            if (self.ckpt / "dvclive").exists():
                shutil.copytree(self.ckpt / "dvclive", self.live)
        elif main and self.root.exists():
            shutil.rmtree(self.root)  # a state for other settings, data or code
        accelerator.wait_for_everyone()
        return (state, True) if state is not None else (TrainState(self.fingerprint), False)

    def read(self, accelerator: Accelerator, parts: Trainables, state: TrainState) -> list[Restore]:
        """Read and check every file the state needs before anything is restored, so that a damaged one
        leaves the fresh model, optimizer and generators as they are."""
        for path in sorted([*self.ckpt.rglob("*.json"), *self.best.rglob("*.json")]):
            with reading(path):
                json.loads(path.read_text())
        if accelerator.is_main_process and state.curve:  # the best weights so far: what the cell exports
            check_weights_folder(self.best)
        return [read_weights(self.ckpt / MODEL_FILE, accelerator.unwrap_model(parts.model)),
                read_optimizer(self.ckpt / OPTIMIZER_FILE, parts.optimizer),
                read_schedule(self.ckpt / SCHEDULE_FILE, parts.scheduler, accelerator.scaler),
                read_rng(self.ckpt / rng_file(accelerator.process_index))]

    def set_aside(self, path: str, reason: str) -> Path:
        """Move the whole damaged state aside (kept to look at, never deleted) and say so on one line."""
        n = 1
        while (aside := self.root.with_name(f"{self.root.name}.damaged-{n}")).exists():
            n += 1
        os.replace(self.root, aside)
        print(f"resume: damaged state {self.root}: {os.path.relpath(path, self.root)}: {reason}; "
              f"moved aside to {aside}; training restarts from step 0", file=sys.stderr, flush=True)
        return aside

    def save(self, accelerator: Accelerator, parts: Trainables, state: TrainState) -> None:
        """Write the full training state (and the curve so far) under a temporary name, then swap it in."""
        main, tmp = accelerator.is_main_process, self.ckpt.with_name("checkpoint.tmp")
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        tensors, meta = rng_state()
        save_file(tensors, tmp / rng_file(accelerator.process_index), metadata=meta)
        if main:
            save_model(accelerator.unwrap_model(parts.model), str(tmp / MODEL_FILE))
            torch.save(parts.optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            (tmp / SCHEDULE_FILE).write_text(json.dumps(schedule_state(parts.scheduler, accelerator.scaler)))
            if self.live.exists():
                shutil.copytree(self.live, tmp / "dvclive")
        accelerator.wait_for_everyone()  # every process's generators are written before the state is marked complete
        if main:
            (tmp / STATE_FILE).write_text(json.dumps(asdict(state)))
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
