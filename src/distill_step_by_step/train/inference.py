"""Using a trained student: label-only batched greedy decoding (bounded by the longest training label),
optionally with rationales (``explain:``) for people to read, and scoring a cell's checkpoint on test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data.datasets import get_spec
from ..data.scoring import is_correct, is_exact, score
from ..jsonio import write_json, write_jsonl
from ..methods.method import MethodSettings
from ..methods.registry import get_method, label_from_output, predict_source, recorded_settings
from ..settings import RunConfig
from ..students.modeling import generate
from ..students.student import Student, load_student
from .cell import Cell, test_records

DEFAULT_BATCH_SIZE = RunConfig().test_batch_size


def load_for_inference(model_dir: str | Path, method: MethodSettings | None = None) -> tuple[Student, dict[str, Any], MethodSettings]:
    """A trained student on the best available device, with what its checkpoint says about its use, and the
    method it was trained with: ``method`` when the caller has the checked settings (the pipeline's test
    half), else the checkpoint's own record of it (``distill-predict``)."""
    student, info = load_student(model_dir)
    if torch.cuda.is_available():
        student.model.to("cuda")
    return student, info, method or recorded_settings(info["method_config"])


def predict(student: Student, info: dict[str, Any], method: MethodSettings, records: list[dict[str, Any]],
            batch_size: int = DEFAULT_BATCH_SIZE, rationales: bool = False) -> list[dict[str, Any]]:
    """Predict labels (and, with ``rationales``, rationales) for records that have ``input`` (or
    premise/hypothesis); inputs are cut where the student's training cut them."""
    sep = student.pair_separator
    max_source = int(info["max_input_tokens"])
    outputs = generate(student, [predict_source(r, method, sep) for r in records],
                       max_new_tokens=int(info["max_label_tokens"]), batch_size=batch_size, max_source=max_source)
    rows = [{"id": r.get("id"), "prediction": label_from_output(method, o)} for r, o in zip(records, outputs)]
    if rationales:
        for row, text in zip(rows, _rationales(student, info, method, records, outputs, batch_size, max_source)):
            row["rationale"] = text
    return rows


def _rationales(student: Student, info: dict[str, Any], method: MethodSettings, records: list[dict[str, Any]],
                outputs: list[str], batch_size: int, max_source: int) -> list[str | None]:
    def explain(sources: list[str]) -> list[str]:
        return generate(student, sources, max_new_tokens=int(info["max_target_tokens"]), batch_size=batch_size,
                        max_source=max_source)

    return get_method(method.name).rationales(explain, records, outputs, student.pair_separator)


def score_student(model_dir: str | Path, records: list[dict[str, Any]], answer_type: str,
                  batch_size: int = DEFAULT_BATCH_SIZE, rationales: bool = False,
                  method: MethodSettings | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Predictions (id, prediction, gold, correct, exact[, rationale]) and their scores under both rules."""
    student, info, method = load_for_inference(model_dir, method)
    rows = predict(student, info, method, records, batch_size, rationales)
    for row, rec in zip(rows, records):
        row["gold"] = rec["label"]
        row["correct"] = is_correct(answer_type, row["prediction"], rec["label"])
        row["exact"] = is_exact(answer_type, row["prediction"], rec["label"])
    result = score(answer_type, [r["prediction"] for r in rows], [r["label"] for r in records])
    metrics = result.as_dict()
    metrics.pop("unparsed")
    return rows, metrics


def score_cell(cell: Cell, method: MethodSettings, model_dir: str | Path, out_dir: str | Path, record: dict[str, Any], *,
               data_root: str | Path = "data", batch_size: int = DEFAULT_BATCH_SIZE,
               rationales: bool = False) -> dict[str, Any]:
    """Score the cell's checkpoint on the dataset's test manifest; write predictions.jsonl and metrics.json
    (the test scores, and what of the cell's record ``student.json`` the report reads)."""
    test = test_records(cell.dataset, Path(data_root) / "corpus", Path(data_root) / "test_sets")
    rows, metrics = score_student(model_dir, test, get_spec(cell.dataset).answer_type, batch_size, rationales, method)
    metrics["record"] = {k: record.get(k) for k in RECORD_FIELDS}
    write_jsonl(Path(out_dir) / "predictions.jsonl", rows)
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


# What metrics.json repeats from the cell's student.json, so the report (and `dvc metrics show`) need only it.
RECORD_FIELDS = ("dataset", "method", "student", "fraction", "seed", "params", "params_m", "n_train", "n_used",
               "best_step", "best_valid_accuracy", "steps")
