"""The ``baseline`` stage: the teacher's own few-shot accuracy on test, from its completions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .corpus import read_corpus
from .datasets import get_spec
from .jsonio import read_lines
from .scoring import is_correct


def score_teacher(records: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """Accuracy of the teacher labels against gold; unparsed completions count as wrong."""
    correct = sum(is_correct(task, r["teacher_label"], r["label"]) for r in records if r["teacher_ok"])
    return {
        "accuracy": round(correct / len(records), 4) if records else 0.0,
        "n": len(records),
        "unparsed": sum(not r["teacher_ok"] for r in records),
    }


def teacher_baseline(corpus_dir: str | Path, dataset: str, test_ids_path: str | Path | None = None) -> dict[str, Any]:
    """Teacher accuracy on the test examples the students are scored on (``test.ids``), and on the full test."""
    task = get_spec(dataset).task
    records = read_corpus(corpus_dir, "test")
    full = score_teacher(records, task)
    if test_ids_path is None:
        return full
    wanted = set(read_lines(test_ids_path))
    subset = [r for r in records if r["id"] in wanted]
    result = score_teacher(subset, task)
    if len(subset) != len(records):
        result["full_test"] = full
    return result
