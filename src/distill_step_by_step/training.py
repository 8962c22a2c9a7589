"""Training one student for one grid cell, resumable, under ``accelerate``.

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` examples per process. For
``step_by_step`` each micro-batch runs the label task and the rationale task as two sub-batches, each
padded to its own length, and back-propagates ``alpha * L_label + (1 - alpha) * L_rationale`` (one
gradient sync per step under DDP; :mod:`.methods` says which tasks and weights). Validation accuracy
(label-only greedy decoding) is measured every ``eval_every`` steps and the best checkpoint by
*validation* accuracy is kept; test data never enters this module.

Interrupted runs resume (:class:`Resume`): every ``save_every`` steps (by default: at the first evaluation
after each ``save_every_minutes``) the full state (weights, optimizer, scheduler, RNG, data position,
best-so-far, the training curve so far) is written atomically, and the best weights whenever they
improve; starting the same cell again continues from there and ends exactly where an uninterrupted run
ends. A state written for other settings, data or code is ignored.

:func:`train_student` reads as the loop it is: build the student and encode the data, build the optimizer
and its schedule, resume (:class:`Resume`), run the steps (:func:`run_steps`: step, log, validate and keep
the best, save), and export the best checkpoint. CPU-only speed-ups are settings: ``freeze_embeddings``
and ``dropout``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from .cell import Cell, training_records
from .datasets import get_spec
from .jsonio import atomic_dir, code_fingerprint, content_hash
from .methods import RowStats, label_from_output, predict_source, target_label, task_units, training_examples, weighted_loss
from .modeling import Row, encode_rows, generate, length_grouped_order, units_losses
from .scoring import Score, score
from .settings import MethodConfig, Settings, StudentConfig, TrainConfig
from .students import STUDENT_FILE, Student, build_student

Units = list[tuple[list[Row], float]]  # the task sub-batches of one micro-batch and their loss weights
# Settings that do not change what training computes: a saved state stays valid when they change.
_NOT_IN_STATE = ("eval_batch_size", "log_every", "keep_weights")


@dataclass
class CellData:
    """The records a cell trains and validates on, and how its answers are scored."""

    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    answer_type: str


@dataclass(frozen=True)
class StepEvent:
    """One finished optimizer step: this process's task sub-batches of each micro-batch."""

    step: int
    micro_batches: list[Units]


@dataclass(frozen=True)
class EvalEvent:
    """One finished validation."""

    step: int
    accuracy: float
    seconds: float


@dataclass
class TrainHooks:
    """Observers of the loop (benchmarks, tests). They are called on the main loop and must not change it."""

    on_step: Callable[[StepEvent], None] | None = None
    on_eval: Callable[[EvalEvent], None] | None = None


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
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def done(self, cfg: TrainConfig) -> bool:
        return self.step >= cfg.max_steps or self.stopped_early


@dataclass
class EncodedCell:
    """A cell's training and validation data, tokenised once."""

    stats: RowStats
    label_rows: list[Row]
    rationale_rows: dict[int, Row]  # by example index; step_by_step rows whose rationale parsed
    costs: list[int]  # per example, for length-grouped batches
    valid: list[tuple[str, str]]  # (predict source, label) pairs
    max_label_tokens: int  # label-only decoding never needs more (EOS included)
    identity: list[Any]  # what the examples are, for the resume fingerprint


def resolve_precision(setting: str) -> str:
    """``auto`` -> bf16 where the GPU supports it, else fp16 on GPU, else no mixed precision."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _cost(row: Row) -> int:
    # A target token costs a decoder layer stack plus the vocabulary projection, several times a source token.
    return len(row.source) + 4 * len(row.target)


def encode_cell(student: Student, method: MethodConfig, data: CellData, cfg: TrainConfig) -> EncodedCell:
    """Turn the cell's records into token rows for each task, and its validation pairs."""
    sep = student.pair_separator
    examples, stats = training_examples(data.train, method, sep)
    if not examples:
        raise ValueError(f"no usable training examples ({stats.dropped})")
    src, tgt = cfg.max_input_tokens, cfg.max_target_tokens
    label_rows = encode_rows(student, [e.label_source for e in examples], [e.label_target for e in examples], src, tgt)
    with_rat = [i for i, e in enumerate(examples) if e.rationale_target is not None]
    rats = encode_rows(student, [examples[i].rationale_source for i in with_rat],
                       [examples[i].rationale_target for i in with_rat], src, tgt)
    rationale_rows = dict(zip(with_rat, rats))
    costs = [_cost(r) + (_cost(rationale_rows[i]) if i in rationale_rows else 0) for i, r in enumerate(label_rows)]
    valid = [(predict_source(rec, method, sep), gold) for rec in data.valid
             if (gold := target_label(rec, method)) is not None]
    identity = [[(e.label_source, e.label_target, e.rationale_target) for e in examples], valid]
    return EncodedCell(stats, label_rows, rationale_rows, costs, valid, max(len(r.target) for r in label_rows), identity)


def freeze_embeddings(model: torch.nn.Module) -> None:
    """Stop training the token-embedding tables: the model's input embeddings and, for an encoder-decoder,
    the decoder's (an LM head tied to one shares its tensor, so it stays as it is too)."""
    tables = [model.get_input_embeddings()]
    decoder = getattr(model, "decoder", None)
    if hasattr(decoder, "get_input_embeddings"):
        tables.append(decoder.get_input_embeddings())
    for table in tables:
        table.weight.requires_grad_(False)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Train with dropout ``p`` everywhere: ``nn.Dropout`` modules and the attention-probability dropout
    that attention modules keep as a number (T5's ``dropout``, Llama's ``attention_dropout``)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        for name in ("dropout", "attention_dropout"):
            value = getattr(module, name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):  # a config may say `0`
                setattr(module, name, p)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, new_params: frozenset[str] = frozenset()) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and norms; freshly initialised parameters (the cross-attention
    of a warm-started decoder) may get their own, larger learning rate (``lr_new_params``)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decays = not (p.ndim < 2 or "norm" in name.lower())
            groups.setdefault((decays, name in new_params), []).append(p)
    new_lr = cfg.lr_new_params if cfg.lr_new_params is not None else cfg.lr
    param_groups = [{"params": ps, "weight_decay": cfg.weight_decay if decays else 0.0, "lr": new_lr if is_new else cfg.lr}
                    for (decays, is_new), ps in sorted(groups.items())]
    # The fused kernel is several times faster than the per-tensor loop, on CPU as on GPU.
    return torch.optim.AdamW(param_groups, lr=cfg.lr, fused=True)


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_steps``, then linear decay to zero at ``max_steps``."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - cfg.warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
        the training settings, the seed, the number of processes, the examples and the package's code."""
        settings = {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_STATE}
        return cls(root, content_hash([student_cfg, asdict(method), settings, seed, world, identity, code_fingerprint()]))

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

    def due(self, accelerator: Accelerator, cfg: TrainConfig, step: int, evaluating: bool, seconds_since_save: float) -> bool:
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


class BatchOrder:
    """Length-grouped batches, epoch after epoch, from the position a (resumed) state says."""

    def __init__(self, costs: list[int], batch_size: int, world: int, rank: int, seed: int, state: TrainState):
        self.costs, self.batch_size, self.world, self.rank, self.seed = costs, batch_size, world, rank, seed
        self.state = state
        self.order = self._epoch_order()

    def _epoch_order(self) -> list[list[int]]:
        order = length_grouped_order(self.costs, self.batch_size, self.seed, self.state.epoch)
        return [b for b in order if len(b) >= self.world]  # every process gets at least one example

    def next(self) -> list[int]:
        """This process's share of the next batch."""
        if self.state.pos >= len(self.order):
            self.state.epoch, self.state.pos = self.state.epoch + 1, 0
            self.order = self._epoch_order()
        batch = self.order[self.state.pos]
        self.state.pos += 1
        return batch[self.rank::self.world]


def train_step(accelerator: Accelerator, model: torch.nn.Module, student: Student, micro_batches: list[Units],
               optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig) -> torch.Tensor:
    """One optimizer step over some micro-batches; returns the summed loss (still on the device)."""
    total = torch.zeros((), device=accelerator.device)
    for i, units in enumerate(micro_batches):
        # gradients are all-reduced once per optimizer step, on the last micro-batch
        last = i == len(micro_batches) - 1
        with (nullcontext() if last else accelerator.no_sync(model)), accelerator.autocast():
            losses = units_losses(model, student, [rows for rows, _ in units], accelerator.device)
            loss = weighted_loss(losses, [weight for _, weight in units])
            accelerator.backward(loss)
        total += loss.detach()
    if cfg.grad_clip:
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def validate(accelerator: Accelerator, model: torch.nn.Module, student: Student, enc: EncodedCell,
             method: MethodConfig, answer_type: str, cfg: TrainConfig) -> tuple[float, float]:
    """Label-only validation accuracy (lenient rule), each process decoding its shard; and its seconds."""
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()  # the seconds are the validation's, not the last step's queued work
    start = time.perf_counter()
    world, rank = accelerator.num_processes, accelerator.process_index
    shard = enc.valid[rank::world]
    inner = Student(accelerator.unwrap_model(model), student.tokenizer, student.kind, student.eos_id)
    with accelerator.autocast():
        outputs = generate(inner, [s for s, _ in shard], max_new_tokens=enc.max_label_tokens,
                           batch_size=cfg.eval_batch_size, max_source=cfg.max_input_tokens, device=accelerator.device)
    result = score(answer_type, [label_from_output(method, o) for o in outputs], [g for _, g in shard])
    counts = torch.tensor([result.correct, result.n], dtype=torch.int64, device=accelerator.device)
    correct, n = (int(c) for c in accelerator.reduce(counts, reduction="sum"))
    return Score(n=n, correct=correct, exact_correct=0).accuracy, time.perf_counter() - start


class CurveLog:
    """The training curve (dvclive, main process only) and the progress bar."""

    def __init__(self, resume: Resume, resumed: bool, main: bool, cfg: TrainConfig, state: TrainState, name: str):
        self.live = _open_live(resume.live, resumed) if main else None
        self.bar = tqdm(total=cfg.max_steps, initial=state.step, desc=name, unit="step", disable=not main,
                        dynamic_ncols=True)

    def train(self, step: int, loss: float, lr: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.3f}")
        if self.live is not None:
            self.live.step = step
            self.live.log_metric("train/loss", loss)
            self.live.log_metric("train/lr", lr)

    def valid(self, step: int, accuracy: float, state: TrainState) -> None:
        self.bar.set_postfix(valid=f"{accuracy:.3f}", best=f"{state.best_accuracy:.3f}")
        if self.live is not None:
            self.live.step = step
            self.live.log_metric("valid/accuracy", accuracy)
            self.live.make_summary()

    def close(self) -> None:
        self.bar.close()
        if self.live is not None:
            self.live.end()


def _open_live(path: Path, resume: bool):
    from dvclive import Live

    # No dvc.yaml edits and no experiment commits from inside a pipeline stage.
    return Live(dir=str(path), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def record_eval(state: TrainState, accuracy: float, loss: float, cfg: TrainConfig) -> bool:
    """Add a validation result to the state; returns whether it is the best so far."""
    step = state.step
    state.history.append({"step": step, "valid_accuracy": accuracy, "loss": loss})
    if accuracy > state.best_accuracy:
        state.best_accuracy, state.best_step, state.bad_evals = accuracy, step, 0
        return True
    state.bad_evals += 1
    state.stopped_early = bool(cfg.early_stop_patience and state.bad_evals >= cfg.early_stop_patience)
    return False


@dataclass
class Loop:
    """What the step loop works with, built once per cell by :func:`train_student`."""

    accelerator: Accelerator
    model: torch.nn.Module  # prepared (DDP-wrapped under a multi-process launch)
    student: Student
    optimizer: torch.optim.Optimizer
    scheduler: Any
    enc: EncodedCell
    method: MethodConfig
    answer_type: str
    cfg: TrainConfig
    resume: Resume
    log: CurveLog
    hooks: TrainHooks


def run_steps(loop: Loop, state: TrainState, batches: BatchOrder) -> None:
    """Step, log, validate (keeping the best) and save resumable states until the cell is done."""
    cfg, method, enc = loop.cfg, loop.method, loop.enc
    last_save, t_seg = time.monotonic(), time.perf_counter()
    loop.model.train()
    while not state.done(cfg):
        micro_batches = [task_units(method, batches.next(), enc.label_rows, enc.rationale_rows, cfg.grad_accum)
                         for _ in range(cfg.grad_accum)]
        loss = train_step(loop.accelerator, loop.model, loop.student, micro_batches, loop.optimizer, loop.scheduler, cfg)
        state.step += 1
        loop.log.bar.update(1)
        if loop.hooks.on_step:
            loop.hooks.on_step(StepEvent(state.step, micro_batches))
        evaluating = state.step % cfg.eval_every == 0 or state.step == cfg.max_steps
        if state.step % cfg.log_every == 0 or state.step == 1 or evaluating:
            loss_value = float(loss)  # reading the loss waits for the device: only when it is shown
            loop.log.train(state.step, loss_value, loop.scheduler.get_last_lr()[0])
        if evaluating:
            evaluate_and_keep_best(loop, state, loss_value)
        if not state.done(cfg) and loop.resume.due(loop.accelerator, cfg, state.step, evaluating,
                                                   time.monotonic() - last_save):
            now = time.perf_counter()
            state.train_seconds, t_seg, last_save = state.train_seconds + now - t_seg, now, time.monotonic()
            loop.resume.save(loop.accelerator, state)
    state.train_seconds += time.perf_counter() - t_seg


def evaluate_and_keep_best(loop: Loop, state: TrainState, loss: float) -> None:
    """Validate now; keep these weights if they are the best so far."""
    acc, seconds = validate(loop.accelerator, loop.model, loop.student, loop.enc, loop.method, loop.answer_type, loop.cfg)
    if record_eval(state, acc, loss, loop.cfg) and loop.accelerator.is_main_process:
        loop.resume.save_best(loop.accelerator.unwrap_model(loop.model), state.step, acc)
    loop.log.valid(state.step, acc, state)
    if loop.hooks.on_eval:
        loop.hooks.on_eval(EvalEvent(state.step, acc, seconds))


def train_student(student_cfg: StudentConfig | dict[str, Any], method: MethodConfig, data: CellData, cfg: TrainConfig, seed: int,
                  out_dir: str | Path, state_dir: str | Path, info: dict[str, Any] | None = None,
                  hooks: TrainHooks | None = None, keep_state: bool = False) -> dict[str, Any]:
    """Train one cell and write its best checkpoint (``save_pretrained`` + ``student.json``) to ``out_dir``.

    Returns what ``student.json`` records: sizes, the best validation accuracy and step, timings. The
    resumable state in ``state_dir`` is removed at the end, unless ``keep_state``: then the finished state
    is saved there (the caller has more to do before the cell is complete, and a kill before then should
    not cost the training: training the same cell again then only exports).
    """
    info, student_cfg = info or {}, StudentConfig.of(student_cfg)
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available())
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    # the data and the model
    set_seed(seed)
    student = build_student(student_cfg)
    enc = encode_cell(student, method, data, cfg)
    if cfg.freeze_embeddings:
        freeze_embeddings(student.model)
    if cfg.dropout is not None:
        set_dropout(student.model, cfg.dropout)
    # the optimizer and its schedule
    optimizer = make_optimizer(student.model, cfg, student.new_parameters)
    scheduler = lr_schedule(optimizer, cfg)
    model, optimizer = accelerator.prepare(student.model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    # where an interrupted run left off
    resume = Resume.for_cell(state_dir, student_cfg, method, cfg, seed, world, enc.identity)
    state, resumed = resume.start(accelerator)
    start_step = state.step
    # the steps
    log = CurveLog(resume, resumed, main, cfg, state, info.get("cell", "train"))
    loop = Loop(accelerator, model, student, optimizer, scheduler, enc, method, data.answer_type, cfg, resume, log,
                hooks or TrainHooks())
    run_steps(loop, state, BatchOrder(enc.costs, cfg.batch_size * world, world, rank, seed, state))
    log.close()
    if keep_state and not (resumed and state.step == start_step):
        resume.save(accelerator, state)
    accelerator.wait_for_everyone()
    # the best checkpoint
    summary = _summary(info, student_cfg, method, cfg, seed, enc, student, state, resumed, accelerator)
    if main:
        export(out_dir, resume, student, summary)
        if not keep_state:
            shutil.rmtree(resume.root, ignore_errors=True)
    accelerator.wait_for_everyone()
    return summary


def _summary(info: dict[str, Any], student_cfg: StudentConfig, method: MethodConfig, cfg: TrainConfig, seed: int,
             enc: EncodedCell, student: Student, state: TrainState, resumed: bool, accelerator: Accelerator) -> dict[str, Any]:
    """What ``student.json`` records about the cell's training."""
    params = student.num_parameters()
    return {
        **info,
        "method_config": asdict(method),
        "student_config": student_cfg.as_dict(),
        "train_config": asdict(cfg),
        "seed": seed,
        "n_train": enc.stats.examples,
        "n_used": enc.stats.used,
        "n_with_rationale": enc.stats.with_rationale,
        "dropped": enc.stats.dropped,
        "n_valid": len(enc.valid),
        "params": params,
        "params_m": round(params / 1e6, 2),
        "steps": state.step,
        "stopped_early": state.stopped_early,
        "best_step": state.best_step,
        "best_valid_accuracy": state.best_accuracy,
        "max_label_tokens": enc.max_label_tokens,
        "train_seconds": round(state.train_seconds, 2),
        "seconds_per_step": round(state.train_seconds / max(1, state.step), 4),
        "resumed": resumed,
        "history": state.history,
        "devices": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
    }


def export(out_dir: str | Path, resume: Resume, student: Student, summary: dict[str, Any]) -> None:
    """The cell's output: the best weights, the tokenizer, ``student.json`` and the training curve."""
    with atomic_dir(out_dir) as tmp:
        for f in resume.best.iterdir():
            if f.name != "best.json":
                shutil.copy2(f, tmp / f.name)
        student.tokenizer.save_pretrained(tmp)
        (tmp / STUDENT_FILE).write_text(json.dumps({"kind": student.kind, **summary}, indent=2) + "\n")
        if resume.live.exists():
            shutil.copytree(resume.live, tmp / "training")


def state_dir(out_dir: str | Path, state_root: str | Path = ".resume") -> Path:
    """Where a cell's resumable state lives while it trains (outside DVC's outputs, which a re-run deletes)."""
    return Path(state_root) / Path(out_dir)


def train_cell(settings: Settings, cell: Cell, out_dir: str | Path, *, corpus_root: str | Path = "data/corpus",
               splits_root: str | Path = "data/splits", state_root: str | Path = ".resume",
               keep_state: bool = False) -> dict[str, Any]:
    """Train the cell's student on its training fraction, validating on the shared validation set."""
    train, valid = training_records(cell, corpus_root, splits_root)
    data = CellData(train, valid, get_spec(cell.dataset).answer_type)
    return train_student(settings.student(cell.student), settings.method(cell.method), data, settings.train,
                         cell.seed, out_dir, state_dir(out_dir, state_root), cell.info(), keep_state=keep_state)
