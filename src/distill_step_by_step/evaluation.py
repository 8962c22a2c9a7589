"""Scoring a trained student on test: label-only batched greedy decoding, bounded by the longest
training label. Optionally also generates rationales (``explain:``) for people to read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .methods import ANSWER_MARKER, MethodConfig, explain_source, label_from_output, predict_source
from .modeling import generate
from .scoring import is_correct
from .students import Student, load_student


def load_for_inference(model_dir: str | Path) -> tuple[Student, dict[str, Any], MethodConfig]:
    """A trained student on the best available device, with the info and method it was trained with."""
    student, info = load_student(model_dir)
    if torch.cuda.is_available():
        student.model.to("cuda")
    return student, info, MethodConfig(**info["method_config"])


def predict(student: Student, info: dict[str, Any], method: MethodConfig, records: list[dict[str, Any]], *,
            batch_size: int = 64, rationales: bool = False) -> list[dict[str, Any]]:
    """Predict labels (and, if asked, rationales) for records that have ``input`` (or premise/hypothesis)."""
    sep = student.pair_separator
    max_source = int(info.get("train_config", {}).get("max_input_tokens", 512))
    outputs = generate(student, [predict_source(r, method, sep) for r in records],
                       max_new_tokens=int(info["max_label_tokens"]), batch_size=batch_size, max_source=max_source)
    rows = [{"id": r.get("id"), "input": r.get("input"), "prediction": label_from_output(method, o)}
            for r, o in zip(records, outputs)]
    if rationales:
        if method.name == "step_by_step":
            max_target = int(info.get("train_config", {}).get("max_target_tokens", 256))
            texts = generate(student, [explain_source(r, sep) for r in records], max_new_tokens=max_target,
                             batch_size=batch_size, max_source=max_source)
        elif method.name == "single_task":
            texts = [o.rsplit(ANSWER_MARKER.strip().lower(), 1)[0].strip() for o in (x.lower() for x in outputs)]
        else:
            texts = [None] * len(records)  # trained without rationales: nothing to show
        for row, text in zip(rows, texts):
            row["rationale"] = text
    return rows


def evaluate_student(model_dir: str | Path, records: list[dict[str, Any]], task: str, *, batch_size: int = 64,
                     rationales: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Predictions (id, input, gold, prediction, correct[, rationale]) and metrics (accuracy, n, ...)."""
    student, info, method = load_for_inference(model_dir)
    start = time.perf_counter()
    rows = predict(student, info, method, records, batch_size=batch_size, rationales=rationales)
    seconds = time.perf_counter() - start
    for row, rec in zip(rows, records):
        row["gold"] = rec["label"]
        row["correct"] = is_correct(task, row["prediction"], rec["label"])
    correct = sum(r["correct"] for r in rows)
    metrics = {
        "accuracy": round(correct / len(rows), 4) if rows else 0.0,
        "n": len(rows),
        "correct": correct,
        "decode_seconds": round(seconds, 2),
        "examples_per_second": round(len(rows) / seconds, 1) if seconds > 0 else None,
    }
    return rows, {**metrics, "cell": _cell_fields(info)}


def _cell_fields(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("dataset", "method", "student", "fraction", "seed", "params", "params_m", "n_train", "n_used",
            "best_step", "best_valid_accuracy", "train_seconds", "seconds_per_step", "steps")
    return {k: info.get(k) for k in keys}
