"""The ``prepare`` stage: normalise every dataset into ``data/prepared``: the paper's from the authors' archive,
a task of ``params.yaml: tasks`` from its files or Hub dataset (:mod:`.tasks`).

Layout written::

    <out>/<dataset>/<split>.jsonl         normalised examples (id, input, label, ...)
    <out>/<dataset>/palm/<split>.jsonl    the recorded PaLM completion of each example (the archive's datasets)
    <out>/<dataset>/human/<split>.jsonl   the rationale people wrote for each example, where there is one
    <out>/<dataset>/prompt.txt            the live teacher's few-shot prompt (so a prompt edit re-annotates)
    <out>/summary.json                    counts, sources (a Hub dataset's revision and fingerprint) and notes
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import DataError
from ..jsonio import atomic_dir, write_json, write_jsonl
from .archive import DatasetArchive
from .datasets import DatasetSpec, get_spec, human_rationales, load_recorded_completions, load_split
from .tasks import read_task_split


def prepare(source: str, out_dir: str | Path, datasets: list[str]) -> dict[str, Any]:
    """Read ``source`` (zip, folder or URL: the paper's datasets) and the tasks' own data, and write the
    normalised datasets; returns the summary."""
    summary: dict[str, Any] = {"source": source, "datasets": {}}
    specs = [get_spec(name) for name in datasets]
    with ExitStack() as stack:
        archive = stack.enter_context(DatasetArchive(source)) if any(s.task is None for s in specs) else None
        tmp = stack.enter_context(atomic_dir(out_dir))
        for spec in tqdm(specs, desc="prepare", unit="dataset"):
            info: dict[str, Any] = {"answer_type": spec.answer_type, "splits": {}}
            if spec.pool_note:
                info["note"] = spec.pool_note
            for split in spec.splits:
                info["splits"][split] = (_archive_split(archive, spec, split, tmp) if spec.task is None
                                         else _task_split(spec, split, tmp))
            if spec.task is None or spec.task.prompt:
                _copy_prompt(spec, tmp / spec.name / "prompt.txt")
            summary["datasets"][spec.name] = info
        write_json(tmp / "summary.json", summary)
    return summary


def _archive_split(archive: DatasetArchive, spec: DatasetSpec, split: str, tmp: Path) -> dict[str, Any]:
    """One split of one of the paper's datasets, with its recorded PaLM completions and human rationales."""
    rows = load_split(archive, spec, split)
    completions = load_recorded_completions(archive, spec, split, len(rows))
    write_jsonl(tmp / spec.name / f"{split}.jsonl", rows)
    write_jsonl(tmp / spec.name / "palm" / f"{split}.jsonl",
                ({"id": r["id"], "completion": c} for r, c in zip(rows, completions)))
    if spec.human:
        write_jsonl(tmp / spec.name / "human" / f"{split}.jsonl",
                    ({"id": r["id"], "rationale": h} for r, h in zip(rows, human_rationales(archive, spec, split))))
    return {"n": len(rows), "source": spec.splits[split].data_file}


def _task_split(spec: DatasetSpec, split: str, tmp: Path) -> dict[str, Any]:
    """One split of a task, read with ``datasets``; rows checked one by one, ids unique."""
    task = spec.task
    read = read_task_split(spec.name, task, split)
    rows, seen = [], set()
    for i, raw in enumerate(read.rows):
        line = read.line_offset + i if read.line_offset else i + 1
        rec = spec.normalise(raw, read.where, line)
        rec["id"] = rec["id"] or f"{spec.name}-{split}-{i:05d}"
        if rec["id"] in seen:
            raise DataError(f"duplicate id {rec['id']!r} (tasks.{spec.name}.id)", path=read.where, line=line)
        seen.add(rec["id"])
        rows.append(rec)
    if not rows:
        raise DataError(f"tasks.{spec.name}: split {split!r} has no rows", path=read.where)
    write_jsonl(tmp / spec.name / f"{split}.jsonl", rows)
    if task.rationale:
        write_jsonl(tmp / spec.name / "human" / f"{split}.jsonl",
                    ({"id": r["id"], "rationale": _rationale(raw.get(task.rationale))} for r, raw in zip(rows, read.rows)))
    return {"n": len(rows), "source": read.pinned}


def _rationale(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _copy_prompt(spec: DatasetSpec, dest: Path) -> None:
    """The live teacher's prompt, beside the examples it is filled with."""
    prompt = spec.prompt_file()
    if not prompt.is_file():
        key = f"tasks.{spec.name}.prompt" if spec.task is not None else f"dataset {spec.name}"
        raise DataError(f"{key}: no such prompt file", path=str(prompt))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(prompt.read_bytes())
