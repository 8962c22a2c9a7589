"""The ``prepare`` stage: normalise every dataset of the archive into ``data/prepared``.

Layout written::

    <out>/<dataset>/<split>.jsonl         normalised examples (id, input, label, ...)
    <out>/<dataset>/palm/<split>.jsonl    the recorded PaLM completion of each example (id, completion)
    <out>/summary.json                    counts, sources and notes per dataset
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..jsonio import atomic_dir, write_json, write_jsonl
from .archive import DatasetArchive
from .datasets import get_spec, load_recorded_completions, load_split


def prepare(source: str, out_dir: str | Path, datasets: list[str]) -> dict[str, Any]:
    """Read ``source`` (zip, folder or URL) and write the normalised datasets; returns the summary."""
    summary: dict[str, Any] = {"source": source, "datasets": {}}
    specs = [get_spec(name) for name in datasets]
    with DatasetArchive(source) as archive, atomic_dir(out_dir) as tmp:
        for spec in tqdm(specs, desc="prepare", unit="dataset"):
            info: dict[str, Any] = {"answer_type": spec.answer_type, "splits": {}}
            if spec.pool_note:
                info["note"] = spec.pool_note
            for split, src in spec.splits.items():
                rows = load_split(archive, spec, split)
                completions = load_recorded_completions(archive, spec, split, len(rows))
                write_jsonl(tmp / spec.name / f"{split}.jsonl", rows)
                write_jsonl(
                    tmp / spec.name / "palm" / f"{split}.jsonl",
                    ({"id": r["id"], "completion": c} for r, c in zip(rows, completions)),
                )
                info["splits"][split] = {"n": len(rows), "source": src.data_file}
            summary["datasets"][spec.name] = info
        write_json(tmp / "summary.json", summary)
    return summary
