"""Rationale corpora: one record per example with the teacher's parsed rationale and label.

Every teacher (the recorded PaLM completions, an HTTP server, a local model) produces records of the
same shape, so everything downstream reads one format::

    {...prepared example..., "completion": raw text, "rationale": str|None, "teacher_label": str|None,
     "teacher_ok": bool, "teacher_error": str|None}

Completions that do not follow the answer pattern stay in the corpus with ``teacher_ok = False`` and
the reason; the summary counts them. So do examples whose request a live teacher's server refused for
good (:func:`failed_record`: ``completion`` is None, ``teacher_error`` the status and the server's
reason): training leaves their teacher outputs out exactly as it does an unparsed completion's, and the
summary counts them apart, as ``failed_requests`` with ``failed_request_reasons`` (only when there are any,
so a summary without failures keeps its shape).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..jsonio import read_jsonl
from .datasets import get_spec, parse_completion
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


def human_record(example: dict[str, Any], rationale: str | None) -> dict[str, Any]:
    """A prepared example with the rationale people wrote for it; the teacher's label is the gold label."""
    ok = bool(rationale)
    return {**example, "completion": rationale or "", "rationale": rationale if ok else None,
            "teacher_label": example["label"] if ok else None, "teacher_ok": ok,
            "teacher_error": None if ok else "no human rationale"}


def failed_record(example: dict[str, Any], error: str) -> dict[str, Any]:
    """An example whose request failed for good (``error``: ``"HTTP 400: <the server's reason>"``): no
    completion, and flagged like an unparsed one so that no teacher output of it is trained on."""
    return {**example, "completion": None, "rationale": None, "teacher_label": None, "teacher_ok": False,
            "teacher_error": error}


def teacher_answer(record: dict[str, Any]) -> str | None:
    """The teacher's label of a corpus record, or None when its completion did not parse (scored wrong)."""
    return record["teacher_label"] if record["teacher_ok"] else None


def summarise(records: list[dict[str, Any]], answer_type: str) -> dict[str, Any]:
    """Rows, parse counts (with reasons), agreement of the teacher label with gold, rationale length; and,
    when there are any, the requests that failed for good (with reasons; they count wrong in agreement)."""
    parsed = [r for r in records if r["teacher_ok"]]
    failed = Counter(_reason(r) for r in records if r.get("completion") is None)
    reasons = Counter(_reason(r) for r in records if not r["teacher_ok"] and r.get("completion") is not None)
    words = [len(r["rationale"].split()) for r in parsed]

    def agreement(rows: list[dict[str, Any]]) -> float:  # the teacher's lenient accuracy on these rows
        return round(score(answer_type, [teacher_answer(r) for r in rows], [r["label"] for r in rows]).accuracy, 4)

    stats: dict[str, Any] = {"rows": len(records), "parsed": len(parsed), "unparsed": reasons.total(),
                             "unparsed_reasons": dict(reasons.most_common())}
    if failed:  # only then, so that the recorded teacher's summaries stay byte for byte as they were
        stats |= {"failed_requests": failed.total(), "failed_request_reasons": dict(failed.most_common())}
    return stats | {
        "agreement": agreement(records),
        "agreement_parsed": agreement(parsed),
        "mean_rationale_words": round(sum(words) / len(words), 2) if words else 0.0,
    }


def _reason(record: dict[str, Any]) -> str:
    """What a summary counts a failure under: its error up to the first colon (``no answer marker``, ``HTTP 400``)."""
    return str(record["teacher_error"]).split(":")[0]


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


def load_human(prepared_dir: str | Path, dataset: str, split: str) -> tuple[list[dict[str, Any]], list[str | None]]:
    """A prepared split and the rationales people wrote for it, checked to be aligned by id."""
    base = Path(prepared_dir) / dataset
    examples = read_jsonl(base / f"{split}.jsonl")
    path = base / "human" / f"{split}.jsonl"
    if not path.is_file():
        raise DataError("no rationales written by people for this dataset", path=str(path))
    rows = read_jsonl(path)
    if len(rows) != len(examples):
        raise DataError(f"{len(rows)} rationales for {len(examples)} examples", path=str(path))
    for i, (ex, row) in enumerate(zip(examples, rows)):
        if row.get("id") != ex["id"]:
            raise DataError(f"rationale is not aligned with example {ex['id']!r}", path=str(path), line=i + 1)
    return examples, [row.get("rationale") for row in rows]


def read_corpus(corpus_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Read one split of a rationale corpus."""
    return read_jsonl(Path(corpus_dir) / f"{split}.jsonl")


def splits_of(dataset: str) -> list[str]:
    """The prepared splits of a dataset (``train`` pool and ``test``)."""
    return list(get_spec(dataset).splits)
