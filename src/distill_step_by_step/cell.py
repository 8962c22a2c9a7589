"""One grid cell (dataset, method, student, fraction, seed): gather its data and settings, then train
or evaluate. The ``distill`` and ``evaluate`` stage scripts are thin wrappers around these functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .corpus import read_corpus
from .datasets import get_spec
from .errors import DataError
from .evaluation import evaluate_student
from .jsonio import read_lines, write_json, write_jsonl
from .methods import MethodConfig
from .params import get


def select(records: list[dict[str, Any]], ids_path: str | Path) -> list[dict[str, Any]]:
    """The records named in an id manifest, in manifest order; unknown ids are an error."""
    by_id = {r["id"]: r for r in records}
    ids = read_lines(ids_path)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{len(missing)} ids not in the corpus (first: {missing[0]!r})", path=str(ids_path))
    return [by_id[i] for i in ids]


def cell_name(dataset: str, method: str, student: str, fraction: str, seed: int | str) -> str:
    """The cell's path below ``models/`` and ``results/``."""
    return f"{dataset}/{method}/{student}/f{fraction}-s{seed}"


def train_cell(params: dict[str, Any], dataset: str, method: str, student: str, fraction: str, seed: int,
               out_dir: str | Path, *, corpus_root: str | Path = "data/corpus", splits_root: str | Path = "data/splits",
               state_root: str | Path = ".resume") -> dict[str, Any]:
    """Train the cell's student on its training fraction, validating on the shared validation set."""
    from .training import CellData, TrainConfig, train_student  # accelerate is slow to import; evaluate needs none of it

    corpus = Path(corpus_root) / dataset
    splits = Path(splits_root) / dataset
    pool = read_corpus(corpus, "train")
    data = CellData(
        train=select(pool, splits / f"seed_{seed}" / f"train_{fraction}.ids"),
        valid=select(pool, splits / "valid.ids"),
        task=get_spec(dataset).task,
    )
    students = get(params, "students")
    if student not in students:
        raise KeyError(f"params.yaml: students has no {student!r} (known: {', '.join(students)})")
    info = {"dataset": dataset, "method": method, "student": student, "fraction": float(fraction),
            "seed": int(seed), "cell": cell_name(dataset, method, student, fraction, seed)}
    return train_student(
        students[student],
        MethodConfig.from_params(method, get(params, f"methods.{method}", {})),
        data,
        TrainConfig.from_params(get(params, "train")),
        int(seed),
        out_dir,
        Path(state_root) / Path(out_dir),
        info,
    )


def evaluate_cell(params: dict[str, Any], dataset: str, model_dir: str | Path, out_dir: str | Path, *,
                  corpus_root: str | Path = "data/corpus", test_sets: str | Path = "data/test_sets") -> dict[str, Any]:
    """Score the cell's checkpoint on the test manifest; write predictions.jsonl and metrics.json."""
    test = select(read_corpus(Path(corpus_root) / dataset, "test"), Path(test_sets) / f"{dataset}.ids")
    rows, metrics = evaluate_student(
        model_dir, test, get_spec(dataset).task,
        batch_size=int(get(params, "evaluate.batch_size", 64)),
        rationales=bool(get(params, "evaluate.rationales", False)),
    )
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "predictions.jsonl", rows)
    write_json(out_dir / "metrics.json", metrics)
    return metrics
