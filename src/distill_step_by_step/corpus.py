"""Rationale corpora: one record per example with the teacher's parsed rationale and label.

Every teacher (the recorded PaLM completions, an HTTP server, a local model) produces records of the
same shape, so everything downstream reads one format::

    {...prepared example..., "completion": raw text, "rationale": str|None, "teacher_label": str|None,
     "teacher_ok": bool, "teacher_error": str|None}

Completions that do not follow the answer pattern stay in the corpus with ``teacher_ok = False`` and
the reason; the summary counts them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .datasets import get_spec
from .errors import DataError
from .jsonio import read_jsonl
from .parsing import parse_completion
from .scoring import score


def corpus_record(example: dict[str, Any], completion: str, dataset: str) -> dict[str, Any]:
    """Attach a parsed teacher completion to a prepared example."""
    parsed = parse_completion(dataset, completion)
    return {
        **example,
        "completion": completion,
        "rationale": parsed.rationale,
        "teacher_label": parsed.label,
        "teacher_ok": parsed.ok,
        "teacher_error": parsed.error,
    }


def teacher_answer(record: dict[str, Any]) -> str | None:
    """The teacher's label of a corpus record, or None when its completion did not parse (scored wrong)."""
    return record["teacher_label"] if record["teacher_ok"] else None


def summarise(records: list[dict[str, Any]], answer_type: str) -> dict[str, Any]:
    """Rows, parse counts (with reasons), agreement of the teacher label with gold, rationale length."""
    parsed = [r for r in records if r["teacher_ok"]]
    reasons = Counter(str(r["teacher_error"]).split(":")[0] for r in records if not r["teacher_ok"])
    words = [len(r["rationale"].split()) for r in parsed]

    def agreement(rows: list[dict[str, Any]]) -> float:  # the teacher's lenient accuracy on these rows
        return round(score(answer_type, [teacher_answer(r) for r in rows], [r["label"] for r in rows]).accuracy, 4)

    return {
        "rows": len(records),
        "parsed": len(parsed),
        "unparsed": len(records) - len(parsed),
        "unparsed_reasons": dict(reasons.most_common()),
        "agreement": agreement(records),
        "agreement_parsed": agreement(parsed),
        "mean_rationale_words": round(sum(words) / len(words), 2) if words else 0.0,
    }


def load_recorded(prepared_dir: str | Path, dataset: str, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A prepared split and its recorded PaLM completions, checked to be aligned by id."""
    base = Path(prepared_dir) / dataset
    examples = read_jsonl(base / f"{split}.jsonl")
    recorded_path = base / "palm" / f"{split}.jsonl"
    recorded = read_jsonl(recorded_path)
    if len(recorded) != len(examples):
        raise DataError(f"{len(recorded)} completions for {len(examples)} examples", path=str(recorded_path))
    for i, (ex, rec) in enumerate(zip(examples, recorded)):
        if rec.get("id") != ex["id"] or not isinstance(rec.get("completion"), str):
            raise DataError(f"completion is not aligned with example {ex['id']!r}", path=str(recorded_path), line=i + 1)
    return examples, [r["completion"] for r in recorded]


def read_corpus(corpus_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Read one split of a rationale corpus."""
    return read_jsonl(Path(corpus_dir) / f"{split}.jsonl")


def splits_of(dataset: str) -> list[str]:
    """The prepared splits of a dataset (``train`` pool and ``test``)."""
    return list(get_spec(dataset).splits)
