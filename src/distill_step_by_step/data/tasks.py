"""Your own task, declared in ``params.yaml: tasks`` without Python: where its rows come from (local JSONL, CSV
or Parquet files, or a Hugging Face Hub dataset, read with ``datasets``), how a model input is made from its
columns, where its gold label is, what kind of answer it has, the live teacher's few-shot prompt and,
optionally, a column of rationales written by people (``teacher.name: human``).

A task becomes a :class:`~.datasets.DatasetSpec` like the paper's four, so annotation, splits, training and
the report treat it alike. Every problem names the task's key in ``params.yaml`` and, for a bad row, its
file and line (row number for Parquet and Hub data).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..schema import SettingsError, setting
from .parsing import Parsed

TASK_ANSWERS = ("label", "text", "number", "equation")  # how a task's answers are scored (data/scoring.py)
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_ANSWER_MARK = re.compile(r"(?:the answer is|answer\s*:)", re.IGNORECASE)


@dataclass(frozen=True)
class TaskConfig:
    """``tasks.<name>``: a task's data, input template, gold label, answer type, prompt and rationales."""

    input: str  # a template over the rows' columns, e.g. "Review: {text}"
    label: str  # the column of the gold label
    answer: str = setting("label", choices=TASK_ANSWERS)
    labels: list[str] | None = None  # answer: label: the closed label set
    files: dict[str, str] | None = None  # split (train, test) -> a JSONL/CSV/Parquet file in the repository
    hub: dict[str, Any] | None = None  # {path, name, revision, splits: {train: ..., test: ...}, fingerprint}
    prompt: str | None = None  # the live teacher's few-shot prompt file in the repository ({column} placeholders)
    stop: list[str] = setting(["\n\n"])  # where a live teacher's generation stops
    rationale: str | None = None  # a column of rationales written by people (teacher.name: human)
    id: str | None = None  # a column of unique ids (None: the row number)

    def check(self, path: str) -> None:
        if (self.files is None) == (self.hub is None):
            raise SettingsError(path, "needs `files` (local files) or `hub` (a Hugging Face dataset), one of them")
        if self.answer == "label" and not self.labels:
            raise SettingsError(f"{path}.labels", "missing: answer: label needs the label set")
        splits = self.files if self.files is not None else (self.hub or {}).get("splits")
        if not isinstance(splits, dict) or not {"train", "test"} <= set(splits):
            where = f"{path}.files" if self.files is not None else f"{path}.hub.splits"
            raise SettingsError(where, "needs a train and a test split")
        if self.hub is not None and not isinstance(self.hub.get("path"), str):
            raise SettingsError(f"{path}.hub.path", "missing: the Hub dataset's name (or a saved dataset's folder)")
        for name, file in (self.files or {}).items():
            if Path(file).suffix not in FILE_FORMATS:
                raise SettingsError(f"{path}.files.{name}", f"must end in one of {', '.join(FILE_FORMATS)}; got {file!r}")
            _inside(file, f"{path}.files.{name}")
        if self.prompt is not None:
            _inside(self.prompt, f"{path}.prompt")
        try:
            self.columns()
        except ValueError as exc:
            raise SettingsError(f"{path}.input", str(exc)) from None

    def columns(self) -> tuple[str, ...]:
        """The columns the input template reads."""
        names = []
        for _, name, spec, conv in string.Formatter().parse(self.input):
            if name is None:
                continue
            if not name.isidentifier() or spec or conv:
                raise ValueError(f"placeholders name a column, as {{text}}; got {{{name}{'!' + conv if conv else ''}"
                                 f"{':' + spec if spec else ''}}}")
            names.append(name)
        if not names:
            raise ValueError("the template names no column (e.g. \"Review: {text}\")")
        return tuple(dict.fromkeys(names))

    def splits(self) -> dict[str, str]:
        """Split name -> its file or Hub split."""
        return dict(self.files if self.files is not None else self.hub["splits"])


def _inside(file: str, key: str) -> None:
    """A task's files are the repository's: a path leaving it could not be a DVC dep."""
    p = Path(file)
    if p.is_absolute() or ".." in p.parts:
        raise SettingsError(key, f"must be a path inside the repository; got {file!r}")


@dataclass
class TaskRows:
    """One split of a task as read: the rows, where they came from (for errors) and what pins them."""

    rows: list[dict[str, Any]]
    where: str
    line_offset: int  # the file line of row 0 (a CSV's header is line 1); 0: rows are numbered, not lines
    pinned: dict[str, Any] = field(default_factory=dict)


def read_task_split(name: str, cfg: TaskConfig, split: str, root: Path = Path(".")) -> TaskRows:
    """One split of a task's rows, read with ``datasets`` (local files, a saved dataset or the Hub's cache)."""
    from datasets import load_dataset, load_from_disk  # noqa: PLC0415  (imported by the stages that read data)
    from datasets.exceptions import DatasetNotFoundError

    source = cfg.splits()[split]
    if cfg.files is not None:
        file = root / source
        key = f"tasks.{name}.files.{split}"
        if not file.is_file():
            raise DataError(f"{key}: no such file", path=str(source))
        fmt = FILE_FORMATS[file.suffix]
        try:
            ds = load_dataset(fmt, data_files=str(file), split="train")
        except Exception as exc:  # datasets wraps the reader's error; say which file in one line
            raise DataError(f"{key}: cannot read it as {fmt} ({_first_line(exc)})", path=str(source)) from None
        return TaskRows(ds.to_list(), str(source), {"json": 1, "csv": 2}.get(fmt, 0), {"file": str(source)})
    hub = cfg.hub
    key, where = f"tasks.{name}.hub", f"{hub['path']}[{source}]"
    try:
        folder = root / hub["path"]
        if (folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file():  # save_to_disk
            saved = load_from_disk(str(folder))
            ds = saved[source] if hasattr(saved, "keys") else saved
        else:
            ds = load_dataset(hub["path"], hub.get("name"), revision=hub.get("revision"), split=source)
    except (DatasetNotFoundError, FileNotFoundError, ConnectionError, ValueError, KeyError) as exc:
        raise DataError(f"{key}: cannot load split {source!r} ({_first_line(exc)}); offline, a Hub dataset must be in "
                        "the datasets cache (HF_DATASETS_OFFLINE=1 reads it there)", path=where) from None
    pinned = {"hub": hub["path"], "name": hub.get("name"), "revision": hub.get("revision"), "split": source,
              "fingerprint": ds._fingerprint}
    if hub.get("fingerprint") not in (None, ds._fingerprint):
        raise DataError(f"{key}.fingerprint: the dataset read here is {ds._fingerprint}, not {hub['fingerprint']}: "
                        "not the examples this task was pinned to (set hub.revision to the commit you mean)", path=where)
    return TaskRows(ds.to_list(), where, 0, pinned)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def task_normaliser(name: str, cfg: TaskConfig) -> Any:
    """``(row, where, line) -> prepared example``: id, input from the template, gold label, the template's
    columns; a missing column or a label outside the declared set names the file, the line and the key."""
    columns = cfg.columns()

    def norm(row: dict[str, Any], where: str, line: int) -> dict[str, Any]:
        fields = {}
        for col in columns:
            fields[col] = _cell(row, col, where, line, f"tasks.{name}.input")
        label = _cell(row, cfg.label, where, line, f"tasks.{name}.label")
        if cfg.labels is not None and label not in cfg.labels:
            raise DataError(f"label {label!r} is not one of tasks.{name}.labels ({', '.join(cfg.labels)})",
                            path=where, line=line)
        rid = _cell(row, cfg.id, where, line, f"tasks.{name}.id") if cfg.id else ""
        return {"id": rid, "input": cfg.input.format_map(fields), "label": label, **fields}

    return norm


def _cell(row: dict[str, Any], column: str, where: str, line: int, key: str) -> str:
    if column not in row or row[column] is None:
        raise DataError(f"no value in column {column!r} (named by {key})", path=where, line=line)
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"column {column!r} should hold text or a number, got {type(value).__name__} ({key})",
                        path=where, line=line)
    return str(value)


def parse_answer(answer: str, labels: list[str] | None) -> Any:
    """A teacher's completion for a task -> (rationale, label): the text before the last ``the answer is`` /
    ``Answer:`` is the rationale, what follows it (to the end of its line, without a final period) the label;
    a label set is matched ignoring case."""
    by_lower = {label.lower(): label for label in labels or ()}

    def parse(text: str) -> Parsed:
        marks = list(_ANSWER_MARK.finditer(text))
        if not marks:
            return Parsed(None, None, "no answer marker: 'the answer is' or 'Answer:'")
        rationale = text[:marks[-1].start()].strip()
        label = text[marks[-1].end():].strip().split("\n")[0].strip().rstrip(".").strip()
        if not rationale:
            return Parsed(None, None, "empty rationale")
        if not label:
            return Parsed(None, None, "empty label")
        if labels is not None:
            if label.lower() not in by_lower:
                return Parsed(None, None, f"label outside the label set: {label[:40]!r}")
            label = by_lower[label.lower()]
        return Parsed(rationale, label)

    return parse
