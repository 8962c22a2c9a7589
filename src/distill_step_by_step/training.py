"""Training one student for one grid cell, resumable, under ``accelerate``.

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` examples per process. For
``step_by_step`` each micro-batch runs the label task and the rationale task as two sub-batches, each
padded to its own length, and back-propagates ``alpha * L_label + (1 - alpha) * L_rationale`` (one
gradient sync per step under DDP). Validation accuracy (label-only greedy decoding) is measured every
``eval_every`` steps and the best checkpoint by *validation* accuracy is kept; test data never enters
this module.

Interrupted runs resume: every ``save_every`` steps (by default: at the first evaluation after each
``save_every_minutes``) the full state (weights, optimizer, scheduler, RNG, data position, best-so-far)
is written atomically to ``state_dir``, and the best weights whenever they improve; starting the same cell again
continues from there and ends exactly where an uninterrupted run ends. A state written for different
settings or data is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from .jsonio import atomic_dir
from .methods import MethodConfig, label_from_output, predict_source, target_label, training_examples
from .modeling import Row, encode_rows, generate, length_grouped_order, units_loss
from .scoring import is_correct
from .students import STUDENT_FILE, Student, build_student


@dataclass(frozen=True)
class TrainConfig:
    """``params.yaml: train`` (the authors' defaults are lr 5e-5, batch 64, 10k steps, input 1024)."""

    lr: float = 5e-5
    lr_new_params: float | None = None  # lr for freshly initialised weights (None: same as lr)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 64
    grad_accum: int = 1
    max_steps: int = 10000
    grad_clip: float | None = 1.0
    eval_every: int = 250
    save_every: int | None = None  # steps between resumable states; None: time-based (save_every_minutes)
    save_every_minutes: float = 5.0  # with save_every None: at an evaluation, if this long since the last save
    early_stop_patience: int | None = None  # evaluations without improvement before stopping
    max_input_tokens: int = 1024
    max_target_tokens: int = 256
    eval_batch_size: int = 64
    mixed_precision: str = "auto"  # auto: bf16 (or fp16) on a GPU, fp32 on CPU
    log_every: int = 10

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown train settings: {', '.join(sorted(unknown))}")
        cfg = cls(**params)
        if cfg.max_steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.eval_every < 1:
            raise ValueError("max_steps, batch_size, grad_accum and eval_every must be >= 1")
        return cfg


@dataclass
class CellData:
    """The records a cell trains and validates on, and how its labels are scored."""

    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    task: str


def resolve_precision(setting: str) -> str:
    """``auto`` -> bf16 where the GPU supports it, else fp16 on GPU, else no mixed precision."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, new_params: frozenset[str] = frozenset()) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and norms; freshly initialised parameters (the cross-attention
    of a warm-started decoder) may get their own, larger learning rate (``lr_new_params``)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = not (p.ndim < 2 or "norm" in name.lower())
        groups.setdefault((decays, name in new_params), []).append(p)
    new_lr = cfg.lr_new_params if cfg.lr_new_params is not None else cfg.lr
    param_groups = [{"params": ps, "weight_decay": cfg.weight_decay if decays else 0.0, "lr": new_lr if is_new else cfg.lr}
                    for (decays, is_new), ps in sorted(groups.items())]
    # The fused kernel is several times faster than the per-tensor loop, on CPU as on GPU.
    return torch.optim.AdamW(param_groups, lr=cfg.lr, fused=True)


def _schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - cfg.warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _cost(row: Row) -> int:
    return len(row.source) + 4 * len(row.target)


def task_units(method: MethodConfig, batch: list[int], label_rows: list[Row], rationale_rows: dict[int, Row],
               grad_accum: int = 1) -> list[tuple[list[Row], float]]:
    """The sub-batches of one micro-batch and their loss weights.

    ``step_by_step``: the label task with weight ``alpha`` and the rationale task with ``1 - alpha``
    (each a token-mean loss, as the authors' two forward passes); every other method: the label task
    with weight 1. A task with zero weight is not computed at all.
    """
    alpha = method.alpha if method.name == "step_by_step" else 1.0
    units = []
    if alpha > 0.0:
        units.append(([label_rows[i] for i in batch], alpha / grad_accum))
    rats = [rationale_rows[i] for i in batch if i in rationale_rows]
    if method.name == "step_by_step" and alpha < 1.0 and rats:
        units.append((rats, (1.0 - alpha) / grad_accum))
    return units


def objective(model: torch.nn.Module, student: Student, units: list[tuple[list[Row], float]],
              device: torch.device | str = "cpu") -> torch.Tensor:
    """The weighted training loss of some task units (what one micro-batch back-propagates)."""
    return units_loss(model, student, units, torch.device(device))[0]


class _State:
    """Where the resumable state of a cell lives, and its atomic save/load."""

    def __init__(self, root: Path):
        self.root = root
        self.ckpt = root / "checkpoint"
        self.best = root / "best"
        self.live = root / "dvclive"

    def trainer_state(self, fingerprint: str) -> dict[str, Any] | None:
        path = self.ckpt / "trainer_state.json"
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        return state if state.get("fingerprint") == fingerprint else None

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


def train_student(
    student_cfg: dict[str, Any],
    method: MethodConfig,
    data: CellData,
    cfg: TrainConfig,
    seed: int,
    out_dir: str | Path,
    state_dir: str | Path,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one cell and write its best checkpoint (``save_pretrained`` + ``student.json``) to ``out_dir``.

    Returns what ``student.json`` records: sizes, the best validation accuracy and step, timings.
    """
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available())
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    set_seed(seed)
    student = build_student(student_cfg)
    sep = student.pair_separator
    examples, stats = training_examples(data.train, method, sep)
    if not examples:
        raise ValueError(f"no usable training examples ({stats.dropped})")
    max_src, max_tgt = cfg.max_input_tokens, cfg.max_target_tokens
    label_rows = encode_rows(student, [e.label_source for e in examples], [e.label_target for e in examples], max_src, max_tgt)
    with_rat = [i for i, e in enumerate(examples) if e.rationale_target is not None]
    rat_encoded = encode_rows(student, [examples[i].rationale_source for i in with_rat],
                              [examples[i].rationale_target for i in with_rat], max_src, max_tgt)
    rationale_rows: dict[int, Row] = dict(zip(with_rat, rat_encoded))
    # Batches are grouped by estimated compute: a target token costs a decoder layer stack plus the
    # vocabulary projection, several times an encoder token, so targets weigh more than sources.
    lengths = [_cost(r) + (_cost(rationale_rows[i]) if i in rationale_rows else 0) for i, r in enumerate(label_rows)]
    # Label-only decoding is bounded by the longest training label, EOS included: a longer output
    # could not be a label the student was taught.
    max_new_tokens = max(len(r.target) for r in label_rows)

    valid_items = [(predict, gold) for predict, gold in (
        (predict_source(rec, method, sep), target_label(rec, method)) for rec in data.valid) if gold is not None]

    model = student.model
    optimizer = _optimizer(model, cfg, student.new_parameters)
    scheduler = _schedule(optimizer, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    causal = student.is_causal

    paths = _State(Path(state_dir))
    if main:
        paths.recover()
    accelerator.wait_for_everyone()
    fingerprint = _fingerprint(student_cfg, asdict(method), {k: v for k, v in asdict(cfg).items()
                               if k not in ("eval_batch_size", "log_every")}, seed, world,
                               [(e.label_source, e.label_target, e.rationale_target) for e in examples], valid_items)
    state = paths.trainer_state(fingerprint)
    resumed = state is not None
    if resumed:
        accelerator.load_state(str(paths.ckpt))
    else:
        if main and paths.root.exists():
            shutil.rmtree(paths.root)  # a state for other settings or data: start over
        state = {"fingerprint": fingerprint, "step": 0, "epoch": 0, "pos": 0, "best_accuracy": -1.0,
                 "best_step": 0, "bad_evals": 0, "stopped_early": False, "train_seconds": 0.0, "history": []}
    accelerator.wait_for_everyone()

    live = _open_live(paths.live, resumed) if main else None
    global_batch = cfg.batch_size * world
    order = length_grouped_order(lengths, global_batch, seed, state["epoch"])
    order = [b for b in order if len(b) >= world]
    bar = tqdm(total=cfg.max_steps, initial=state["step"], desc=info.get("cell", "train") if info else "train",
               unit="step", disable=not main, dynamic_ncols=True)
    last_save = time.monotonic()
    model.train()
    t_seg = time.perf_counter()
    while state["step"] < cfg.max_steps and not state["stopped_early"]:
        micro_batches = []
        for _ in range(cfg.grad_accum):
            if state["pos"] >= len(order):
                state["epoch"] += 1
                state["pos"] = 0
                order = [b for b in length_grouped_order(lengths, global_batch, seed, state["epoch"]) if len(b) >= world]
            micro_batches.append(order[state["pos"]][rank::world])
            state["pos"] += 1
        losses: list[torch.Tensor] = []
        for i, mine in enumerate(micro_batches):
            units = task_units(method, mine, label_rows, rationale_rows, cfg.grad_accum)
            # gradients are all-reduced once per optimizer step, on the last micro-batch
            with (nullcontext() if i == len(micro_batches) - 1 else accelerator.no_sync(model)), accelerator.autocast():
                loss, _ = units_loss(model, student, units, accelerator.device)
                accelerator.backward(loss)
            losses.append(loss.detach())
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        step = state["step"]
        bar.update(1)
        evaluating = step % cfg.eval_every == 0 or step == cfg.max_steps
        total = 0.0
        if step % cfg.log_every == 0 or step == 1 or evaluating:
            total = float(sum(losses))  # reading the loss waits for the device: only when it is shown
            bar.set_postfix(loss=f"{total:.3f}")
            if live is not None:
                live.step = step
                live.log_metric("train/loss", total)
                live.log_metric("train/lr", scheduler.get_last_lr()[0])

        if evaluating:
            acc = _validate(accelerator, model, student, valid_items, method, data.task, max_new_tokens, cfg)
            state["history"].append({"step": step, "valid_accuracy": acc, "loss": total})
            if live is not None:
                live.step = step
                live.log_metric("valid/accuracy", acc)
                live.make_summary()
            if acc > state["best_accuracy"]:
                state.update(best_accuracy=acc, best_step=step, bad_evals=0)
                if main:
                    tmp = paths.best.with_name("best.tmp")
                    shutil.rmtree(tmp, ignore_errors=True)
                    accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
                    (tmp / "best.json").write_text(json.dumps({"step": step, "valid_accuracy": acc}))
                    paths.swap_in(tmp, paths.best)
            else:
                state["bad_evals"] += 1
                if cfg.early_stop_patience and state["bad_evals"] >= cfg.early_stop_patience:
                    state["stopped_early"] = True
            bar.set_postfix(loss=f"{total:.3f}", valid=f"{acc:.3f}", best=f"{state['best_accuracy']:.3f}")
        due = _save_due(cfg, step, evaluating, time.monotonic() - last_save)
        if world > 1 and evaluating and not cfg.save_every:
            # a time-based decision: every process must take the same one, or the save's barrier hangs
            due = bool(accelerator.reduce(torch.tensor(float(due), device=accelerator.device), reduction="max"))
        if step < cfg.max_steps and not state["stopped_early"] and due:
            last_save = time.monotonic()
            now = time.perf_counter()
            state["train_seconds"] += now - t_seg
            t_seg = now
            _save_state(accelerator, paths, state)
    bar.close()
    state["train_seconds"] += time.perf_counter() - t_seg
    accelerator.wait_for_everyone()

    summary = {
        **(info or {}),
        "method_config": asdict(method),
        "student_config": student_cfg,
        "train_config": asdict(cfg),
        "seed": seed,
        "n_train": stats.examples,
        "n_used": stats.used,
        "n_with_rationale": stats.with_rationale,
        "dropped": stats.dropped,
        "n_valid": len(valid_items),
        "params": student.num_parameters(),
        "params_m": round(student.num_parameters() / 1e6, 2),
        "steps": state["step"],
        "stopped_early": state["stopped_early"],
        "best_step": state["best_step"],
        "best_valid_accuracy": state["best_accuracy"],
        "max_label_tokens": max_new_tokens,
        "train_seconds": round(state["train_seconds"], 2),
        "seconds_per_step": round(state["train_seconds"] / max(1, state["step"]), 4),
        "resumed": resumed,
        "history": state["history"],
        "devices": world,
        "mixed_precision": accelerator.mixed_precision,
    }
    if live is not None:
        live.end()
    if main:
        with atomic_dir(out_dir) as tmp:
            for f in paths.best.iterdir():
                if f.name != "best.json":
                    shutil.copy2(f, tmp / f.name)
            student.tokenizer.save_pretrained(tmp)
            (tmp / STUDENT_FILE).write_text(json.dumps({"kind": student.kind, **summary}, indent=2) + "\n")
            if paths.live.exists():
                shutil.copytree(paths.live, tmp / "training")
        shutil.rmtree(paths.root, ignore_errors=True)
    accelerator.wait_for_everyone()
    return summary


def _open_live(path: Path, resume: bool):
    from dvclive import Live

    # No dvc.yaml edits and no experiment commits from inside a pipeline stage.
    return Live(dir=str(path), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def _validate(accelerator: Accelerator, model: torch.nn.Module, student: Student, items: list[tuple[str, str]],
              method: MethodConfig, task: str, max_new_tokens: int, cfg: TrainConfig) -> float:
    """Label-only validation accuracy, each process decoding its shard."""
    world, rank = accelerator.num_processes, accelerator.process_index
    shard = items[rank::world]
    inner = Student(accelerator.unwrap_model(model), student.tokenizer, student.kind, student.eos_id)
    with accelerator.autocast():
        outputs = generate(inner, [s for s, _ in shard], max_new_tokens=max_new_tokens, batch_size=cfg.eval_batch_size,
                           max_source=cfg.max_input_tokens, device=accelerator.device)
    correct = sum(is_correct(task, label_from_output(method, o), g) for o, (_, g) in zip(outputs, shard))
    counts = torch.tensor([correct, len(shard)], dtype=torch.float64, device=accelerator.device)
    counts = accelerator.reduce(counts, reduction="sum")
    return float(counts[0] / counts[1]) if counts[1] else 0.0


def _save_due(cfg: TrainConfig, step: int, evaluating: bool, since_last: float) -> bool:
    """Whether to write a resumable state now: every ``save_every`` steps, or (by default) at an
    evaluation once ``save_every_minutes`` have passed, so short CPU cells spend no time on states."""
    if cfg.save_every:
        return step % cfg.save_every == 0
    return evaluating and since_last >= 60.0 * cfg.save_every_minutes


def _save_state(accelerator: Accelerator, paths: _State, state: dict[str, Any]) -> None:
    """Write the full training state under a temporary name, then swap it in (a kill keeps the old one)."""
    tmp = paths.ckpt.with_name("checkpoint.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state))  # written last: marks the state complete
        paths.swap_in(tmp, paths.ckpt)
    accelerator.wait_for_everyone()

