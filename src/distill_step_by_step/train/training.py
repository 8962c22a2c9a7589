"""Training one student for one grid cell, resumable, under ``accelerate``.

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` examples per process. For
``step_by_step`` each micro-batch runs the label task and the rationale task as two sub-batches, each
padded to its own length, and back-propagates ``alpha * L_label + (1 - alpha) * L_rationale`` (one
gradient sync per step under DDP; :mod:`..methods.registry` says which tasks and weights). Validation accuracy
(label-only greedy decoding) is measured every ``eval_every`` steps and the best checkpoint by
*validation* accuracy is kept; test data never enters this module.

:func:`train_student` reads as the loop it is: build the student and encode the data, build the optimizer
and its schedule, resume (:mod:`.resume`), run the steps (:func:`run_steps`: step, log, validate and keep
the best, save), and export the best checkpoint. What it returns is split by what may be kept: the
cell's record and validation curve depend on the inputs only; its timings go to the run log.
"""

from __future__ import annotations

import math
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

from ..data.datasets import get_spec
from ..data.scoring import Score, score
from ..errors import StageError
from ..jsonio import atomic_dir
from ..methods.method import MethodSettings, RowStats, target_label
from ..methods.registry import label_from_output, predict_source, task_loss, task_units, training_examples, weighted_loss
from ..settings import RunConfig, Settings, StudentConfig, TrainConfig
from ..students.modeling import Loss, Row, encode_rows, generate, length_grouped_order, units_losses
from ..students.lora import BASE_KEY as LORA_BASE
from ..students.lora import portable, trainable_parameters
from ..students.student import Student, build_student, freeze_embeddings, save_inference_info, set_dropout
from .cell import Cell, training_records
from .resume import Resume, Trainables, TrainState

Units = list[tuple[list[Row], float]]  # the task sub-batches of one micro-batch and their loss weights


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
class EncodedCell:
    """A cell's training and validation data, tokenised once."""

    stats: RowStats
    label_rows: list[Row]
    rationale_rows: dict[int, Row]  # by example index; step_by_step rows whose rationale parsed
    costs: list[int]  # per example, for length-grouped batches
    valid: list[tuple[str, str]]  # (predict source, label) pairs
    max_label_tokens: int  # label-only decoding never needs more (EOS included)
    identity: list[Any]  # what the examples are, for the resume fingerprint
    output_vocab: list[int] | None = None  # train.output_vocabulary: seen: the tokens of the training examples


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


def encode_cell(student: Student, method: MethodSettings, data: CellData, cfg: TrainConfig, seed: int = 0) -> EncodedCell:
    """Turn the cell's records into token rows for each task, and its validation pairs."""
    sep = student.pair_separator
    examples, stats = training_examples(data.train, method, sep, seed, data.answer_type)
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
    seen = None
    if cfg.output_vocabulary == "seen":
        seen = sorted({student.eos_id, *(t for r in [*label_rows, *rats] for t in (*r.source, *r.target))})
    return EncodedCell(stats, label_rows, rationale_rows, costs, valid, max(len(r.target) for r in label_rows), identity,
                       seen)


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
               optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig, task_loss: Loss) -> torch.Tensor:
    """One optimizer step over some micro-batches, each task sub-batch with the method's ``task_loss``; returns the
    summed loss (still on the device)."""
    total = torch.zeros((), device=accelerator.device)
    for i, units in enumerate(micro_batches):
        # gradients are all-reduced once per optimizer step, on the last micro-batch
        last = i == len(micro_batches) - 1
        with (nullcontext() if last else accelerator.no_sync(model)), accelerator.autocast():
            losses = units_losses(model, student, [rows for rows, _ in units], accelerator.device, task_loss)
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
             method: MethodSettings, answer_type: str, cfg: TrainConfig, batch_size: int) -> tuple[Score, float]:
    """Label-only validation (lenient rule), each process decoding its shard; and its seconds."""
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()  # the seconds are the validation's, not the last step's queued work
    start = time.perf_counter()
    world, rank = accelerator.num_processes, accelerator.process_index
    shard = enc.valid[rank::world]
    inner = Student(accelerator.unwrap_model(model), student.tokenizer, student.kind, student.eos_id,
                    output_vocab=student.output_vocab)
    with accelerator.autocast():
        outputs = generate(inner, [s for s, _ in shard], max_new_tokens=enc.max_label_tokens,
                           batch_size=batch_size, max_source=cfg.max_input_tokens, device=accelerator.device)
    result = score(answer_type, [label_from_output(method, o) for o in outputs], [g for _, g in shard])
    counts = torch.tensor([result.correct, result.n], dtype=torch.int64, device=accelerator.device)
    correct, n = (int(c) for c in accelerator.reduce(counts, reduction="sum"))
    return Score(n=n, correct=correct, exact_correct=0), time.perf_counter() - start


class CurveLog:
    """The training-loss curve (dvclive, main process only; part of the run log, not of the cell's outputs)
    and the progress bar."""

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


def record_eval(state: TrainState, result: Score, cfg: TrainConfig) -> bool:
    """Add a validation result to the state's curve; returns whether it is the best so far.

    The curve keeps counts alone (the accuracy as a fraction of ``n``, rounded to 4 places, exact for
    n <= 10,000): the training loss, whose last digits differ between CPU models, is the run log's
    (dvclive), so that the file is the same wherever the cell is trained."""
    step, accuracy = state.step, result.accuracy
    state.curve.append({"step": step, "valid_accuracy": round(accuracy, 4), "valid_n": result.n})
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
    parts: Trainables  # the prepared model, optimizer and LR schedule
    student: Student
    enc: EncodedCell
    method: MethodSettings
    answer_type: str
    cfg: TrainConfig
    run: RunConfig
    resume: Resume
    log: CurveLog
    hooks: TrainHooks


def run_steps(loop: Loop, state: TrainState, batches: BatchOrder) -> None:
    """Step, log, validate (keeping the best) and save resumable states until the cell is done."""
    cfg, run, method, enc = loop.cfg, loop.run, loop.method, loop.enc
    last_save, t_seg = time.monotonic(), time.perf_counter()
    parts, loss_of = loop.parts, task_loss(method)
    parts.model.train()
    while not state.done(cfg):
        micro_batches = [task_units(method, batches.next(), enc.label_rows, enc.rationale_rows, cfg.grad_accum, state.step)
                         for _ in range(cfg.grad_accum)]
        loss = train_step(loop.accelerator, parts.model, loop.student, micro_batches, parts.optimizer, parts.scheduler, cfg, loss_of)
        state.step += 1
        loop.log.bar.update(1)
        if loop.hooks.on_step:
            loop.hooks.on_step(StepEvent(state.step, micro_batches))
        evaluating = state.step % cfg.eval_every == 0 or state.step == cfg.max_steps
        if state.step % run.log_every == 0 or state.step == 1 or evaluating:
            loss_value = float(loss)  # reading the loss waits for the device: only when it is shown
            check_finite(loss_value, state.step, run.log_every)
            loop.log.train(state.step, loss_value, parts.scheduler.get_last_lr()[0])
        if evaluating:
            validate_and_keep_best(loop, state)
        if not state.done(cfg) and loop.resume.due(loop.accelerator, run, state.step, evaluating,
                                                   time.monotonic() - last_save):
            check_finite(float(loss), state.step, run.log_every)  # never save weights a non-finite loss broke
            now = time.perf_counter()
            state.train_seconds, t_seg, last_save = state.train_seconds + now - t_seg, now, time.monotonic()
            loop.resume.save(loop.accelerator, parts, state)
    state.train_seconds += time.perf_counter() - t_seg


class NonFiniteLoss(StageError):
    """The training loss became NaN or infinite: the cell stops rather than train on (and save) broken weights."""


def check_finite(loss: float, step: int, every: int) -> None:
    """Stop the cell when the loss it reads is not a finite number, naming the step."""
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"the training loss is {loss} at step {step} (read every run.log_every = {every} "
                            "steps, so it went wrong at most that many steps before); nothing of this run is kept: "
                            "lower train.lr, set train.grad_clip, or check the method's loss")


def validate_and_keep_best(loop: Loop, state: TrainState) -> None:
    """Validate now; keep these weights if they are the best so far."""
    result, seconds = validate(loop.accelerator, loop.parts.model, loop.student, loop.enc, loop.method, loop.answer_type,
                               loop.cfg, loop.run.valid_batch_size)
    if record_eval(state, result, loop.cfg) and loop.accelerator.is_main_process:
        loop.resume.save_best(loop.accelerator.unwrap_model(loop.parts.model), state.step, result.accuracy)
    loop.log.valid(state.step, result.accuracy, state)
    if loop.hooks.on_eval:
        loop.hooks.on_eval(EvalEvent(state.step, result.accuracy, seconds))


@dataclass
class TrainResult:
    """What training one cell gives: its record (``student.json``) and validation curve, which depend on
    the inputs alone, and its timings, which depend on the machine (the run log)."""

    record: dict[str, Any]
    curve: list[dict[str, Any]]
    timings: dict[str, Any] = field(default_factory=dict)


def train_student(student_cfg: StudentConfig | dict[str, Any], method: MethodSettings, data: CellData, cfg: TrainConfig,
                  seed: int, out_dir: str | Path, state_dir: str | Path, info: dict[str, Any] | None = None,
                  hooks: TrainHooks | None = None, keep_state: bool = False, run: RunConfig = RunConfig(),
                  log_dir: str | Path | None = None) -> TrainResult:
    """Train one cell and write its best checkpoint (``save_pretrained``, with what inference needs in its
    config) to ``out_dir``; the training-loss curve (dvclive) goes to ``log_dir`` when given.

    The resumable state in ``state_dir`` is removed at the end, unless ``keep_state``: then the finished
    state is saved there (the caller has more to do before the cell is complete, and a kill before then
    should not cost the training: training the same cell again then only exports).
    """
    info, student_cfg = info or {}, StudentConfig.of(student_cfg)
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available())
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    # the data and the model
    set_seed(seed)
    student = build_student(student_cfg)
    enc = encode_cell(student, method, data, cfg, seed)
    student.restrict_output(enc.output_vocab)
    if cfg.freeze_embeddings:
        freeze_embeddings(student.model)
    if cfg.dropout is not None:
        set_dropout(student.model, cfg.dropout)
    # the optimizer and its schedule
    optimizer = make_optimizer(student.model, cfg, student.new_parameters)
    scheduler = lr_schedule(optimizer, cfg)
    # not registered with accelerate, whose checkpoints pickle it: the resumable state keeps the schedule as JSON
    parts = Trainables(*accelerator.prepare(student.model, optimizer), scheduler)
    # where an interrupted run left off
    resume = Resume.for_cell(state_dir, student_cfg, method, cfg, seed, world, enc.identity)
    state, resumed = resume.start(accelerator, parts)
    start_step = state.step
    # the steps
    log = CurveLog(resume, resumed, main, cfg, state, info.get("cell", "train"))
    loop = Loop(accelerator, parts, student, enc, method, data.answer_type, cfg, run, resume, log, hooks or TrainHooks())
    run_steps(loop, state, BatchOrder(enc.costs, cfg.batch_size * world, world, rank, seed, state))
    log.close()
    if keep_state and not (resumed and state.step == start_step):
        resume.save(accelerator, parts, state)
    accelerator.wait_for_everyone()
    # the best checkpoint
    result = TrainResult(_record(info, student_cfg, method, cfg, seed, enc, student, state, accelerator),
                         list(state.curve), _timings(state, resumed, start_step))
    if main:
        export(out_dir, resume, student, _inference_info(info, student_cfg, method, cfg, enc))
        if log_dir is not None and resume.live.exists():
            shutil.rmtree(Path(log_dir) / "dvclive", ignore_errors=True)
            shutil.copytree(resume.live, Path(log_dir) / "dvclive")
        if not keep_state:
            shutil.rmtree(resume.root, ignore_errors=True)
    accelerator.wait_for_everyone()
    return result


def _record(info: dict[str, Any], student_cfg: StudentConfig, method: MethodSettings, cfg: TrainConfig, seed: int,
            enc: EncodedCell, student: Student, state: TrainState, accelerator: Accelerator) -> dict[str, Any]:
    """What ``student.json`` records about the cell's training: settings, counts, sizes and the chosen
    checkpoint. Nothing here depends on the clock or the machine."""
    params = student.num_parameters()
    return {
        **info,
        "kind": student.kind,
        "method_config": method.record(),
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
        **({"trainable_params": trainable_parameters(student.model)} if student_cfg.lora is not None else {}),
        "steps": state.step,
        "stopped_early": state.stopped_early,
        "best_step": state.best_step,
        "best_valid_accuracy": round(state.best_accuracy, 4),
        "max_label_tokens": enc.max_label_tokens,
        "output_vocab_size": len(enc.output_vocab) if enc.output_vocab is not None else len(student.tokenizer),
        "devices": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
    }


def _timings(state: TrainState, resumed: bool, start_step: int) -> dict[str, Any]:
    return {"train_seconds": round(state.train_seconds, 2),
            "seconds_per_step": round(state.train_seconds / max(1, state.step), 4),
            "resumed_at_step": start_step if resumed else None}


def _inference_info(info: dict[str, Any], student_cfg: StudentConfig, method: MethodSettings, cfg: TrainConfig,
                    enc: EncodedCell) -> dict[str, Any]:
    """What a checkpoint must carry to be used alone (``distill-predict``): how it reads inputs and answers, and
    (LoRA adapters) the student they adapt."""
    out = {"dataset": info.get("dataset"), "method_config": method.record(), "max_input_tokens": cfg.max_input_tokens,
           "max_target_tokens": cfg.max_target_tokens, "max_label_tokens": enc.max_label_tokens,
           "output_vocabulary": enc.output_vocab}
    if student_cfg.lora is not None:
        out[LORA_BASE] = student_cfg.without_lora()
    return out


def export(out_dir: str | Path, resume: Resume, student: Student, inference: dict[str, Any]) -> None:
    """The cell's checkpoint: the best weights, the tokenizer, and a config that says how to use them."""
    with atomic_dir(out_dir) as tmp:
        for f in resume.best.iterdir():
            if f.name != "best.json":
                shutil.copy2(f, tmp / f.name)
        student.tokenizer.save_pretrained(tmp)
        save_inference_info(tmp, student.kind, inference)
        if LORA_BASE in inference:
            portable(tmp, inference[LORA_BASE])


def state_dir(out_dir: str | Path, state_root: str | Path = ".resume") -> Path:
    """Where a cell's resumable state lives while it trains (outside DVC's outputs, which a re-run deletes)."""
    return Path(state_root) / Path(out_dir)


def train_cell(settings: Settings, cell: Cell, out_dir: str | Path, *, data_root: str | Path = "data",
               state_root: str | Path = ".resume", keep_state: bool = False,
               log_dir: str | Path | None = None) -> TrainResult:
    """Train the cell's student on its training fraction, validating on the shared validation set."""
    train, valid = training_records(cell, Path(data_root) / "corpus", Path(data_root) / "splits")
    data = CellData(train, valid, get_spec(cell.dataset).answer_type)
    return train_student(settings.student(cell.student), settings.method(cell.method), data, settings.train,
                         cell.seed, out_dir, state_dir(out_dir, state_root), cell.info(), keep_state=keep_state,
                         run=settings.run, log_dir=log_dir)
