"""The ``annotate`` stage: turn a teacher's outputs into a rationale corpus for one dataset.

``teacher.name: palm`` parses the recorded PaLM 540B completions shipped with the archive. The live
teachers (HTTP, local model) live in :mod:`distill_step_by_step.teachers` and write the same records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from .corpus import corpus_record, load_recorded, splits_of, summarise
from .datasets import get_spec
from .jsonio import atomic_dir, write_jsonl


def annotate_recorded(prepared_dir: str | Path, dataset: str, out_dir: str | Path) -> dict[str, Any]:
    """Parse the recorded PaLM completions of every split of ``dataset`` into ``out_dir/<split>.jsonl``."""
    spec = get_spec(dataset)
    summary: dict[str, Any] = {"dataset": dataset, "teacher": "palm", "splits": {}}
    with atomic_dir(out_dir) as tmp:
        for split in splits_of(dataset):
            examples, completions = load_recorded(prepared_dir, dataset, split)
            records = [
                corpus_record(ex, comp, dataset)
                for ex, comp in tqdm(zip(examples, completions), total=len(examples), desc=f"{dataset}/{split}", unit="ex")
            ]
            write_jsonl(tmp / f"{split}.jsonl", records)
            summary["splits"][split] = summarise(records, spec.task)
    if spec.pool_note:
        summary["note"] = spec.pool_note
    return summary
