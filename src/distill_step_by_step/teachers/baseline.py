"""The ``baseline`` stage: the teacher's own few-shot accuracy on test, from its completions.

Per dataset, ``reports/baseline.json`` holds the teacher scored on the students' test examples
(``test.ids``; the same examples the students are scored on) and, under ``full_test``, on the whole
official test split, each under both rules of :mod:`..data.scoring`: ``accuracy`` (lenient, our headline rule)
and ``exact_accuracy`` (the authors' exact match, the figure to compare with the paper). An unparsed
completion counts as wrong under both. ``teacher_predictions`` gives the teacher's answer on each of the
students' test examples, in test order, so that the report can pair it with every student's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.corpus import read_corpus, teacher_answer
from ..data.datasets import get_spec
from ..data.scoring import RULES, is_correct, is_exact, score
from ..jsonio import read_lines


def score_teacher(records: list[dict[str, Any]], answer_type: str) -> dict[str, Any]:
    """The teacher labels against gold under both rules (an unparsed completion is wrong)."""
    labels = [teacher_answer(r) for r in records]
    return score(answer_type, labels, [r["label"] for r in records]).as_dict()


def teacher_baseline(corpus_dir: str | Path, dataset: str, test_ids_path: str | Path) -> dict[str, Any]:
    """Teacher accuracy on the students' test examples, and on the full official test split."""
    answer_type = get_spec(dataset).answer_type
    records = read_corpus(corpus_dir, "test")
    wanted = set(read_lines(test_ids_path))
    result = score_teacher([r for r in records if r["id"] in wanted], answer_type)
    result["full_test"] = score_teacher(records, answer_type)
    result["rules"] = RULES
    return result


def teacher_predictions(corpus_dir: str | Path, dataset: str, test_ids_path: str | Path) -> list[dict[str, Any]]:
    """The teacher's answer on each of the students' test examples, in the test manifest's order (the order
    every student's predictions.jsonl has)."""
    answer_type = get_spec(dataset).answer_type
    by_id = {r["id"]: r for r in read_corpus(corpus_dir, "test")}
    rows = []
    for i in read_lines(test_ids_path):
        rec, label = by_id[i], teacher_answer(by_id[i])
        rows.append({"id": i, "prediction": label, "gold": rec["label"],
                     "correct": is_correct(answer_type, label, rec["label"]),
                     "exact": is_exact(answer_type, label, rec["label"])})
    return rows
