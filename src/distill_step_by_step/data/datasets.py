"""The datasets, each one :class:`DatasetSpec` in one registry: where it lives in the authors' archive, how a
row is normalised, how a model input is built from an example's fields, how a teacher's completion is
parsed and where its generation stops, how it is scored and what chance is (its title in reports:
``report/presentation.py``).

Every prepared example has ``id``, ``input`` (formatted exactly as the authors' code formats it) and
``label`` (gold, as text), plus what its task needs (``choices`` for CQA, ``premise``/``hypothesis``
for the NLI sets). The split named ``train`` is the *training pool*; for e-SNLI and ANLI-R1 the mirror
has no train inputs, so the pool is the official dev split (see ``POOL_NOTE``).

Adding a dataset is one spec passed to :func:`register` and its few-shot prompt file
(``prompts/<name>.txt``, for live teachers); a spec missing a piece fails when it is made, not halfway
through a stage. A dataset defined outside the package registers itself from a ``DSS_PLUGINS`` module; one
declared in ``params.yaml: tasks`` (:mod:`.tasks`) becomes a spec when the settings are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..plugins import Registry
from .archive import DatasetArchive
from .parsing import NLI_LABELS, Parsed, parse_anli, parse_choice, parse_equation, parse_esnli
from .tasks import TaskConfig, parse_answer, task_normaliser

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
# how answers are scored (data/scoring.py): the paper's datasets', then what a task may declare
ANSWER_TYPES = ("choice", "nli", "equation", "label", "text", "number")
# The authors' T5 students join premise and hypothesis with the tokenizer's EOS token; the prepared
# ``input`` spells T5's, and ``student_text`` re-joins with each student's own separator.
T5_EOS = "</s>"
POOL_NOTE = (
    "training pool is the official dev split (the mirror has no train inputs); "
    "validation is a fixed held-out part of it"
)


@dataclass(frozen=True)
class SplitSource:
    """Where one prepared split comes from in the archive."""

    data_file: str  # e.g. "cqa/cqa_train.json"
    completions: str  # prefix of the recorded PaLM files, e.g. "cqa/llm/train_CoT_"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: everything the pipeline needs to know about it."""

    name: str
    answer_type: str  # "choice" | "nli" | "equation" (how answers are scored)
    splits: dict[str, SplitSource]
    normalise: Callable[[dict[str, Any], str, int], dict[str, Any]]  # (raw row, where, line) -> prepared example
    model_input: Callable[[dict[str, Any]], str]  # an example's fields -> the model input (distill-predict too)
    fields: tuple[str, ...]  # the fields model_input reads
    parse: Callable[[str], Parsed]  # a teacher's few-shot completion -> (rationale, label)
    stop: tuple[str, ...]  # where a teacher's generation stops: the start of the next few-shot exemplar
    chance: float | None  # accuracy of guessing uniformly among the answer options (None: no closed answer set)
    pool_note: str | None = None
    attach_ids: Callable[[DatasetArchive, str, list[dict[str, Any]]], None] | None = None  # ids from elsewhere
    prompt: Path | None = field(default=None)  # the few-shot prompt (default prompts/<name>.txt)
    human: str | None = None  # the raw rows' column of rationales written by people (teacher.name: human)
    task: TaskConfig | None = None  # declared in params.yaml: tasks (read with `datasets`, not from the archive)

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"dataset {self.name!r}: answer_type must be one of {', '.join(ANSWER_TYPES)}")
        if not {"train", "test"} <= set(self.splits):
            raise ValueError(f"dataset {self.name!r}: needs a train and a test split, has {sorted(self.splits)}")
        if not self.stop:
            raise ValueError(f"dataset {self.name!r}: needs the stop strings of its prompt")
        if self.task is None and not self.prompt_file().is_file():
            raise ValueError(f"dataset {self.name!r}: no few-shot prompt at {self.prompt_file()}")

    def prompt_file(self) -> Path:
        """The few-shot prompt a live teacher is given."""
        return self.prompt if self.prompt is not None else PROMPTS / f"{self.name}.txt"

    def rationale_column(self) -> str | None:
        """The column of rationales written by people, if the dataset has one."""
        return self.task.rationale if self.task is not None else self.human


def _need(row: dict[str, Any], key: str, where: str, line: int) -> Any:
    if key not in row:
        raise DataError(f"missing field {key!r}", path=where, line=line)
    return row[key]


def _text(row: dict[str, Any], key: str, where: str, line: int) -> str:
    value = _need(row, key, where, line)
    if not isinstance(value, str):
        raise DataError(f"field {key!r} should be a string, got {type(value).__name__}", path=where, line=line)
    return value


def cqa_input(question: str, choices: list[str]) -> str:
    """The authors' CommonsenseQA prompt: question, then the five lettered choices."""
    letters = "abcde"
    lines = [question, "Answer Choices:"] + [f"({letters[i]}) {c}" for i, c in enumerate(choices)]
    return "\n".join(lines)


CQA_CHOICES = 5


def _cqa_model_input(fields: dict[str, Any]) -> str:
    choices = fields.get("choices")
    if not (isinstance(choices, list) and len(choices) == CQA_CHOICES and all(isinstance(c, str) for c in choices)):
        raise ValueError(f"field 'choices' should be a list of {CQA_CHOICES} strings")
    return cqa_input(_field(fields, "question"), choices)


def _nli_model_input(fields: dict[str, Any]) -> str:
    return T5_EOS.join([_field(fields, "premise"), _field(fields, "hypothesis")])


def _text_input(fields: dict[str, Any]) -> str:
    return _field(fields, "input")


def _field(fields: dict[str, Any], name: str) -> str:
    if name not in fields:
        raise ValueError(f"missing field {name!r}")
    value = fields[name]
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} should be a string, got {type(value).__name__}")
    return value


def _norm_cqa(row: dict[str, Any], where: str, line: int) -> dict[str, Any]:
    question = _text(row, "question", where, line)
    choices = _need(row, "choices", where, line)
    if not (isinstance(choices, list) and len(choices) == 5 and all(isinstance(c, str) for c in choices)):
        raise DataError("field 'choices' should be a list of 5 strings", path=where, line=line)
    answer = _text(row, "answer", where, line)
    return {
        "id": str(_need(row, "id", where, line)),
        "input": _cqa_model_input({"question": question, "choices": choices}),
        "label": answer,
        "question": question,
        "choices": choices,
    }


def _nli_label(value: Any, where: str, line: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(NLI_LABELS):
        raise DataError(f"label should be 0, 1 or 2, got {value!r}", path=where, line=line)
    return NLI_LABELS[value]


def _norm_nli(id_key: str | None) -> Callable[[dict[str, Any], str, int], dict[str, Any]]:
    def norm(row: dict[str, Any], where: str, line: int) -> dict[str, Any]:
        premise = _text(row, "premise", where, line)
        hypothesis = _text(row, "hypothesis", where, line)
        rid = str(_need(row, id_key, where, line)) if id_key else ""
        return {
            "id": rid,
            "input": _nli_model_input({"premise": premise, "hypothesis": hypothesis}),
            "label": _nli_label(_need(row, "label", where, line), where, line),
            "premise": premise,
            "hypothesis": hypothesis,
        }

    return norm


def _norm_svamp(row: dict[str, Any], where: str, line: int) -> dict[str, Any]:
    return {"id": "", "input": _text(row, "input", where, line), "label": _text(row, "label", where, line)}


DATASETS: Registry[DatasetSpec] = Registry("dataset")
register = DATASETS.register  # add a dataset (its name must be new)
registry = DATASETS.all  # every registered dataset by name, plugins included
get_spec = DATASETS.get  # a dataset's spec by name; an unknown name lists the known ones


def register_task(name: str, cfg: TaskConfig) -> DatasetSpec:
    """Make ``tasks.<name>`` a dataset (again, unchanged, when the settings are read twice)."""
    known = registry().get(name)
    if known is not None:
        if known.task == cfg:
            return known
        what = "a dataset of the package" if known.task is None else "a task declared differently"
        raise ValueError(f"tasks.{name}: {what} already has this name")
    labels = cfg.labels if cfg.answer == "label" else None
    spec = DatasetSpec(
        name, cfg.answer, {split: SplitSource(source, "") for split, source in cfg.splits().items()},
        task_normaliser(name, cfg), lambda fields: cfg.input.format_map(fields), cfg.columns(),
        parse_answer(cfg.answer, labels), tuple(cfg.stop), 1 / len(labels) if labels else None,
        prompt=Path(cfg.prompt) if cfg.prompt else None, task=cfg)
    return register(spec)


def parse_completion(dataset: str, text: str) -> Parsed:
    """Parse a completion with the rules of ``dataset`` (its spec's ``parse``); never raises on odd text."""
    if not isinstance(text, str):
        return Parsed(None, None, f"not text: {type(text).__name__}")
    return get_spec(dataset).parse(text)


def load_split(archive: DatasetArchive, spec: DatasetSpec, split: str) -> list[dict[str, Any]]:
    """Normalise one split of one dataset. Ids missing from the source are made from the position."""
    src = spec.splits[split]
    where = archive.where(src.data_file)
    rows = archive.read_jsonl(src.data_file)
    out = []
    for i, row in enumerate(rows):
        rec = spec.normalise(row, where, i + 1)
        rec["id"] = rec["id"] or f"{spec.name}-{split}-{i:05d}"
        out.append(rec)
    if spec.attach_ids is not None:
        spec.attach_ids(archive, split, out)
    seen: set[str] = set()
    for i, rec in enumerate(out):
        if rec["id"] in seen:
            raise DataError(f"duplicate id {rec['id']!r}", path=where, line=i + 1)
        seen.add(rec["id"])
    return out


def human_rationales(archive: DatasetArchive, spec: DatasetSpec, split: str) -> list[str | None]:
    """The rationales people wrote for a split's examples, in order (None where a row has none)."""
    rows = archive.read_jsonl(spec.splits[split].data_file)
    return [r.get(spec.human) if isinstance(r.get(spec.human), str) and r.get(spec.human).strip() else None
            for r in rows]


def _attach_svamp_ids(archive: DatasetArchive, split: str, rows: list[dict[str, Any]]) -> None:
    """Give SVAMP rows their original ``chal-N`` ids when SVAMP.json reproduces the released split.

    The authors split the 1,000 raw problems with ``numpy.random.RandomState(0).permutation``, first
    800 for train; if the raw file is absent or disagrees, the positional ids stay.
    """
    if not archive.has("svamp/SVAMP.json"):
        return
    raw = archive.read_json("svamp/SVAMP.json")
    if not isinstance(raw, list):
        return
    try:
        items = [(str(r["ID"]), f'{r["Body"]}\n{r["Question"]}', str(r["Equation"])) for r in raw]
    except (KeyError, TypeError):
        return
    perm = np.random.RandomState(seed=0).permutation(len(items))
    idx = perm[:800] if split == "train" else perm[800:]
    chosen = [items[j] for j in idx]
    if len(chosen) == len(rows) and all(c[1] == r["input"] and c[2] == r["label"] for c, r in zip(chosen, rows)):
        for c, r in zip(chosen, rows):
            r["id"] = c[0]


def load_recorded_completions(archive: DatasetArchive, spec: DatasetSpec, split: str, n_expected: int) -> list[str]:
    """The recorded PaLM completions of a split, concatenated from ``<prefix>0.json, 1.json, ...``.

    Raises DataError when there are none, when an item is not a string, or when the total does not
    match the number of examples (the alignment is by order, so a mismatch would mislabel everything).
    """
    prefix = spec.splits[split].completions
    files = []
    while archive.has(f"{prefix}{len(files)}.json"):
        files.append(f"{prefix}{len(files)}.json")
    if not files:
        raise DataError("missing recorded teacher completions", path=archive.where(f"{prefix}0.json"))
    out: list[str] = []
    for member in files:
        batch = archive.read_json(member)
        if not isinstance(batch, list):
            raise DataError("expected a JSON list of completion strings", path=archive.where(member))
        for j, item in enumerate(batch):
            if not isinstance(item, str):
                raise DataError(f"item {j} is {type(item).__name__}, expected a string", path=archive.where(member))
        out.extend(batch)
    if len(out) != n_expected:
        names = ", ".join(archive.where(f) for f in files)
        raise DataError(
            f"{len(out)} completions for {n_expected} examples of {spec.splits[split].data_file} "
            f"(completions are aligned by order, so counts must match): {names}"
        )
    return out


for _spec in (
    DatasetSpec("cqa", "choice",
                {"train": SplitSource("cqa/cqa_train.json", "cqa/llm/train_CoT_"),
                 "test": SplitSource("cqa/cqa_test.json", "cqa/llm/test_CoT_")},
                _norm_cqa, _cqa_model_input, ("question", "choices"), parse_choice, ("\nQ:",), 1 / 5,
                human="abstractive_explanation"),  # CoS-E
    DatasetSpec("svamp", "equation",
                {"train": SplitSource("svamp/svamp_train.json", "svamp/llm/train_CoT_"),
                 "test": SplitSource("svamp/svamp_test.json", "svamp/llm/test_CoT_")},
                _norm_svamp, _text_input, ("input",), parse_equation, ("\nQ:",), None, attach_ids=_attach_svamp_ids),
    DatasetSpec("esnli", "nli",
                {"train": SplitSource("esnli/esnli_valid.json", "esnli/llm/valid_CoT_"),
                 "test": SplitSource("esnli/esnli_test.json", "esnli/llm/test_CoT_")},
                _norm_nli(None), _nli_model_input, ("premise", "hypothesis"), parse_esnli, ("\nPremise:",), 1 / 3, POOL_NOTE,
                human="explanation_1"),
    DatasetSpec("anli1", "nli",
                {"train": SplitSource("anli1/anli1_valid.json", "anli1/llm/valid_CoT_"),
                 "test": SplitSource("anli1/anli1_test.json", "anli1/llm/test_CoT_")},
                _norm_nli("uid"), _nli_model_input, ("premise", "hypothesis"), parse_anli, ("\nPremise:",), 1 / 3, POOL_NOTE,
                human="reason"),  # the annotator's reason
):
    register(_spec)


def student_text(record: dict[str, Any], separator: str | None) -> str:
    """The model input for a student whose tokenizer joins NLI sentence pairs with ``separator``."""
    if "premise" in record and separator:
        return separator.join([record["premise"], record["hypothesis"]])
    return record["input"]
