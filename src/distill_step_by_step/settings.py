"""Every setting of ``params.yaml``, declared once and checked in one place when a stage starts.

Each group is a dataclass whose fields carry their allowed range (:func:`setting`). :func:`load_settings`
reads the file and parses every group: an unknown key (``methods.step_by_step.alhpa``), a value of the
wrong type or one out of range (``train.lr: -1e-4``, ``split.pool_size: 0``), and grid entries that name
no dataset, method or student stop the stage with a :class:`SettingsError` naming the key path.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .data.datasets import register_task
from .data.datasets import registry as datasets_registry
from .data.tasks import TaskConfig
from .errors import DataError
from .methods.method import MethodSettings
from .methods.registry import method_settings, registry
from .schema import SettingsError, as_mapping, parse, setting, shown, typed_value

# the student kinds: one file each in students/kinds/ (encoder_decoder.py is `encoder-decoder`), read from the
# folder so that checking settings imports no model code
STUDENT_KINDS = tuple(sorted(p.stem.replace("_", "-") for p in (Path(__file__).parent / "students" / "kinds").glob("*.py")
                             if p.stem != "__init__"))
LIVE_TEACHERS = ("http", "local")  # each with its settings block, teacher.<name>
# palm: the recorded PaLM 540B completions; human: the rationales people wrote (a dataset's column)
TEACHERS = ("palm", *LIVE_TEACHERS, "human")
PRECISIONS = ("auto", "no", "bf16", "fp16")

# ----- the groups -----

@dataclass(frozen=True)
class DataConfig:
    """``data``: where the authors' archive is and which datasets to prepare."""

    source: str
    datasets: list[str]  # each a registered dataset (data/datasets.py), checked in _check_grid


@dataclass(frozen=True)
class TeacherConfig:
    """``teacher``: who writes the rationales (``palm`` = the recorded PaLM 540B completions)."""

    name: str = setting("palm", choices=TEACHERS)
    max_examples: int | None = setting(None, ge=1)
    # the share of a split's requests a live teacher's server may refuse for good (an HTTP 400 for an
    # over-long prompt...) with the corpus still written, those examples left out like unparsed ones
    max_failed_share: float = setting(0.01, ge=0, le=1)
    http: Any = None  # HttpSettings once checked (check_teacher), or None
    local: Any = None  # LocalSettings once checked, or None

    @classmethod
    def of(cls, value: "TeacherConfig | dict[str, Any]") -> "TeacherConfig":
        """A TeacherConfig from itself or from a ``teacher`` mapping (checked)."""
        return value if isinstance(value, cls) else check_teacher(parse(cls, value, "teacher"))


@dataclass(frozen=True)
class HttpSettings:
    """``teacher.http``: any OpenAI-compatible server (see teachers/http.py)."""

    base_url: str
    model: str | None = None
    api_key_env: str | None = None  # the NAME of the environment variable holding the key, never the key
    endpoint: str = setting("completions", choices=("completions", "chat"))
    system: str | None = None
    temperature: float = setting(0.0, ge=0)
    top_p: float | None = setting(None, gt=0, le=1)
    max_tokens: int = setting(128, ge=1)
    seed: int | None = None
    concurrency: int = setting(4, ge=1)
    timeout: float = setting(120.0, gt=0)  # seconds per request
    retries: int = setting(5, ge=0)
    backoff: float = setting(1.0, ge=0)
    backoff_max: float = setting(30.0, ge=0)
    # what the tokens cost: {input: USD, output: USD} per million tokens (the corpus summary and report show it)
    price_per_million: dict[str, float] | None = None
    # a tokenizer (hub name, folder, package:...) that counts the tokens of a server that reports no `usage`
    tokenizer: str | None = None

    def check(self, path: str) -> None:
        if self.price_per_million is not None:
            price = self.price_per_million
            if set(price) != {"input", "output"} or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in price.values()):
                raise SettingsError(f"{path}.price_per_million", "should be {input: USD, output: USD} per million "
                                    f"tokens, each a number >= 0; got {price!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise SettingsError(f"{path}.base_url", f"must be an http(s) URL, got {self.base_url!r}")
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            # Never echo the value: whoever put a key here has just leaked it into params.yaml.
            raise SettingsError(f"{path}.api_key_env", "must be the NAME of an environment variable (e.g. "
                                "OPENAI_API_KEY), not the key itself")


@dataclass(frozen=True)
class LocalSettings:
    """``teacher.local``: a transformers causal LM on this machine (see teachers/local.py)."""

    model: str
    gguf_file: str | None = None
    chat: bool = False
    batch_size: int = setting(4, ge=1)
    max_new_tokens: int = setting(128, ge=1)
    threads: int | None = setting(None, ge=1)
    device: str | None = None


@dataclass(frozen=True)
class SplitConfig:
    """``split``: validation carved from the training pool, the pool cap, the test subsample."""

    valid_size: float = setting(0.1, gt=0)  # < 1: fraction of the pool; >= 1: number of examples
    valid_max: int | None = setting(None, ge=1)
    valid_seed: int = setting(0, ge=0)
    pool_size: int | None = setting(None, ge=1)
    test_size: int | None = setting(None, ge=1)


@dataclass(frozen=True)
class GridConfig:
    """``grid``: the cells are every combination of these lists."""

    datasets: list[str]  # each a registered dataset (data/datasets.py), checked in _check_grid
    methods: list[str]  # each a registered method (methods/registry.py), checked in _check_grid
    students: list[str]
    fractions: list[float] = setting(gt=0, le=1)
    seeds: list[int] = setting(ge=0)
    # variants of methods (``methods.<name>: {extends: ...}``) trained beside them: DVC's stage ``train_variant``
    variants: list[str] = setting([])

    @property
    def all_methods(self) -> list[str]:
        """The methods, then the variants: what the grid's cells train."""
        return [*self.methods, *self.variants]

    def cells(self) -> list[tuple[str, str, str, float, int]]:
        """Every (dataset, method, student, fraction, seed) of the grid, in params order (variants after the
        methods)."""
        return [(d, m, s, f, seed) for d in self.datasets for m in self.all_methods for s in self.students
                for f in self.fractions for seed in self.seeds]


@dataclass(frozen=True)
class LoraSettings:
    """``students.<name>.lora``: train low-rank adapters on a frozen student (``students/lora.py``, peft)."""

    r: int = setting(8, ge=1)  # the adapters' rank
    alpha: float = setting(16.0, gt=0)  # their scale is alpha / r
    dropout: float = setting(0.0, ge=0, le=0.9)
    target_modules: list[str] | None = None  # the adapted modules' names; None: peft's default for the architecture


@dataclass(frozen=True)
class StudentConfig:
    """``students.<name>``: a pretrained checkpoint (hub name, folder, ``package:``) or a config built in code."""

    kind: str = setting("seq2seq", choices=STUDENT_KINDS)
    pretrained: str | None = None
    tokenizer: str | None = None
    gguf_file: str | None = None
    encoder_layers: int | None = setting(None, ge=1)  # encoder-decoder warm start: keep N layers (see keep_layers)
    decoder_layers: int | None = setting(None, ge=1)
    # which N layers a truncated warm start keeps: the `first` N, or N `spread` evenly up to the last one
    # (DistilBERT-style; README "Students" says which learned in the demo's budget)
    keep_layers: str = setting("first", choices=("first", "spread"))
    # encoder-decoder warm start, what the encoder checkpoint lacks: `copy` starts each decoder layer's
    # cross-attention as a copy of its self-attention and the LM-head transform as the identity; `random`
    # is transformers' random init (see students._warm_started)
    fresh_init: str = setting("copy", choices=("copy", "random"))
    config: dict[str, Any] | None = None  # built in code: {model_type: t5, d_model: ...}
    init_seed: int = setting(0, ge=0)
    lora: dict[str, Any] | None = None  # LoraSettings: train adapters, not the model (README "LoRA students")

    def check(self, path: str) -> None:
        if not self.pretrained and not self.config:
            raise SettingsError(path, "needs `pretrained` (a checkpoint) or `config` (a model built in code)")
        if self.config is not None and "model_type" not in self.config:
            raise SettingsError(f"{path}.config", "needs a model_type (e.g. t5)")
        if not self.pretrained and not self.tokenizer:
            raise SettingsError(path, "a model built in code needs a `tokenizer`")
        if self.lora is not None:
            self.lora_settings(f"{path}.lora")

    def lora_settings(self, path: str = "student.lora") -> LoraSettings | None:
        """The LoRA settings, checked (None: the whole student trains)."""
        return None if self.lora is None else parse(LoraSettings, self.lora, path)

    def without_lora(self) -> dict[str, Any]:
        """The settings of the student that a LoRA student adapts (what its checkpoint names as its base)."""
        return {k: v for k, v in self.as_dict().items() if k != "lora"}

    @classmethod
    def of(cls, value: "StudentConfig | dict[str, Any]") -> "StudentConfig":
        """A StudentConfig from itself or from a ``students.<name>`` mapping (checked)."""
        return value if isinstance(value, cls) else parse(cls, value, "student")

    def as_dict(self) -> dict[str, Any]:
        """The settings that were given (what ``student.json`` records)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class TrainConfig:
    """``train``: what a cell computes (the authors' defaults: lr 5e-5, batch 64, 10k steps, inputs up to 1024
    tokens). Every setting here is part of a cell's identity: changing one retrains the cells that use it."""

    lr: float = setting(5e-5, gt=0)
    lr_new_params: float | None = setting(None, gt=0)  # freshly initialised weights (None: same as lr)
    warmup_steps: int = setting(0, ge=0)
    weight_decay: float = setting(0.0, ge=0)
    batch_size: int = setting(64, ge=1)
    grad_accum: int = setting(1, ge=1)
    max_steps: int = setting(10000, ge=1)
    grad_clip: float | None = setting(1.0, gt=0)
    eval_every: int = setting(250, ge=1)
    early_stop_patience: int | None = setting(None, ge=1)  # evaluations without improvement before stopping
    max_input_tokens: int = setting(1024, ge=8)
    max_target_tokens: int = setting(256, ge=2)
    mixed_precision: str = setting("auto", choices=PRECISIONS)  # auto: bf16 (or fp16) on a GPU, fp32 on CPU
    # true: the token embeddings (and an LM head tied to them) stay as pretrained (a CPU speed-up)
    freeze_embeddings: bool = False
    # `seen`: the student outputs only the tokens of its cell's training examples (inputs and targets), a
    # softmax over those alone (a CPU speed-up for answers from a small label set); `all`: its whole vocabulary
    output_vocabulary: str = setting("all", choices=("all", "seen"))
    dropout: float | None = setting(None, ge=0, le=0.9)  # every dropout of the student while training (None: its own)


@dataclass(frozen=True)
class TestConfig:
    """``test``: what test decoding writes."""

    __test__ = False  # not a pytest test class, whatever its name
    rationales: bool = False  # also generate rationales (step_by_step) into predictions.jsonl


@dataclass(frozen=True)
class RunConfig:
    """``run``: how cells run, not what they compute. No stage depends on this group, so changing a setting
    here retrains nothing (and a saved training state stays valid)."""

    valid_batch_size: int = setting(64, ge=1)
    test_batch_size: int = setting(64, ge=1)
    log_every: int = setting(10, ge=1)
    save_every: int | None = setting(None, ge=1)  # steps between resumable states; None: time-based
    save_every_minutes: float = setting(5.0, gt=0)  # with save_every None: at an evaluation, this long after the last
    keep_weights: bool = True  # false: a cell keeps its record and its checkpoint's config, not its weights


@dataclass(frozen=True)
class PathsConfig:
    """``paths``: where a pipeline's files go; a grid's params set their own (see :mod:`.ops.grid`)."""

    root: str = "."  # where the stages run, relative to the dvc.yaml that runs them
    params: str = "params.yaml"  # the params file, relative to the root
    data: str = "data"
    models: str = "models"
    results: str = "results/demo"  # per cell: student.json, predictions.jsonl, metrics.json, valid_curve.json
    reports: str = "reports"  # baseline.json, corpus/ and splits/ summaries, results.csv/.md, plots/


@dataclass(frozen=True)
class Settings:
    """All of ``params.yaml``."""

    data: DataConfig
    teacher: TeacherConfig
    split: SplitConfig
    grid: GridConfig
    students: dict[str, StudentConfig]
    methods: dict[str, MethodSettings]  # each method's own settings class (methods/)
    tasks: dict[str, TaskConfig]  # your own datasets, each a dataset once the settings are read
    train: TrainConfig
    test: TestConfig
    run: RunConfig
    paths: PathsConfig
    launch: str = "python"  # how a training stage starts: python, or e.g. `accelerate launch --num_processes 8`

    def student(self, name: str) -> StudentConfig:
        return self.students[name]

    def method(self, name: str) -> MethodSettings:
        return self.methods[name]


# ----- parsing -----

def load_settings(path: str | Path = "params.yaml") -> Settings:
    """Read and check ``params.yaml``; any problem raises an error naming the key."""
    return parse_settings(read_params(path), str(path))


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The params file as a plain mapping (not checked: :func:`parse_settings` does that)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("params file not found", path=str(path))
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"not valid YAML ({exc})", path=str(path)) from None
    if not isinstance(params, dict):
        raise DataError("params file must be a mapping", path=str(path))
    return params


def parse_settings(params: dict[str, Any], source: str = "params.yaml") -> Settings:
    """Check every group of a params mapping and the references between groups."""
    try:
        return _parse_settings(params)
    except SettingsError as exc:
        raise SettingsError(exc.path, exc.message, source) from None


def _parse_settings(params: dict[str, Any]) -> Settings:
    groups = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(params) - groups)
    if unknown:
        raise SettingsError(unknown[0], f"unknown settings group; known: {', '.join(sorted(groups))}")
    for name in ("data", "grid", "students", "train"):
        if name not in params:
            raise SettingsError(name, "missing")
    for i, f in enumerate(params["grid"].get("fractions") or [] if isinstance(params["grid"], dict) else []):
        if isinstance(f, int) and not isinstance(f, bool):
            # DVC names cells and manifests by the value as written; 1 and 1.0 would name different files
            raise SettingsError(f"grid.fractions[{i}]", f"write fractions as decimals ({f}.0, not {f})")
    students = {name: parse(StudentConfig, raw, f"students.{name}")
                for name, raw in as_mapping(params["students"], "students").items()}
    methods = {name: method_settings(name, raw) for name, raw in as_mapping(params.get("methods"), "methods").items()}
    tasks = {name: _task(name, raw) for name, raw in as_mapping(params.get("tasks"), "tasks").items()}
    settings = Settings(
        data=parse(DataConfig, params["data"], "data"),
        teacher=check_teacher(parse(TeacherConfig, params.get("teacher"), "teacher")),
        split=parse(SplitConfig, params.get("split"), "split"),
        grid=parse(GridConfig, params["grid"], "grid"),
        students=students,
        methods=methods,
        tasks=tasks,
        train=parse(TrainConfig, params["train"], "train"),
        test=parse(TestConfig, params.get("test"), "test"),
        run=parse(RunConfig, params.get("run"), "run"),
        paths=parse(PathsConfig, params.get("paths"), "paths"),
        launch=typed_value(params.get("launch", "python"), str, "launch"),
    )
    _check_grid(settings)
    return settings


def _task(name: str, raw: Any) -> TaskConfig:
    """``tasks.<name>``, checked and registered as a dataset."""
    task = parse(TaskConfig, raw, f"tasks.{name}")
    try:
        register_task(name, task)
    except ValueError as exc:
        raise SettingsError(f"tasks.{name}", str(exc).removeprefix(f"tasks.{name}: ")) from None
    return task


def check_teacher(teacher: TeacherConfig) -> TeacherConfig:
    """The teacher settings with every live teacher's block checked and typed (whichever teacher is picked)."""
    blocks = {}
    for name, cls in (("http", HttpSettings), ("local", LocalSettings)):
        block = getattr(teacher, name)
        if block is not None and not isinstance(block, cls):
            if not isinstance(block, dict):
                raise SettingsError(f"teacher.{name}", f"should be a mapping of settings, got {shown(block)}")
            blocks[name] = parse(cls, block, f"teacher.{name}")
    teacher = dataclasses.replace(teacher, **blocks)
    if teacher.name in LIVE_TEACHERS and getattr(teacher, teacher.name) is None:
        raise SettingsError(f"teacher.{teacher.name}", f"missing: teacher.name is {teacher.name}")
    return teacher


def _check_grid(s: Settings) -> None:
    known = datasets_registry()
    for group in ("data", "grid"):
        for i, name in enumerate(getattr(s, group).datasets):
            if name not in known:
                raise SettingsError(f"{group}.datasets[{i}]", f"must be one of {', '.join(known)}; got {name!r}")
    for i, name in enumerate(s.grid.datasets):
        if name not in s.data.datasets:
            raise SettingsError(f"grid.datasets[{i}]", f"{name!r} is not prepared: add it to data.datasets "
                                f"({', '.join(s.data.datasets)})")
    for i, name in enumerate(s.grid.methods):
        if name in s.methods and s.methods[name].variant:
            raise SettingsError(f"grid.methods[{i}]", f"{name} is a variant of {s.methods[name].name}: list it "
                                "under grid.variants")
        if name not in registry():
            raise SettingsError(f"grid.methods[{i}]", f"must be one of {', '.join(registry())}; got {name!r}")
        if name not in s.methods:
            raise SettingsError(f"methods.{name}", f"missing: grid.methods names {name}, so params.yaml needs its "
                                "settings (`{}` for none)")
    for i, name in enumerate(s.grid.variants):
        if name not in s.methods or not s.methods[name].variant:
            raise SettingsError(f"grid.variants[{i}]", f"{name!r} is not a variant: params.yaml needs "
                                f"methods.{name}: {{extends: <a method>, ...}}")
    for i, name in enumerate(s.grid.students):
        if name not in s.students:
            raise SettingsError(f"grid.students[{i}]", f"no student {name!r} under students "
                                f"(known: {', '.join(s.students)})")
    for key in ("datasets", "methods", "students", "fractions", "seeds"):
        values = getattr(s.grid, key)
        if not values:
            raise SettingsError(f"grid.{key}", "must not be empty")
        if len(set(values)) != len(values):
            raise SettingsError(f"grid.{key}", f"repeats a value: {values}")
    if len(set(s.grid.variants)) != len(s.grid.variants):
        raise SettingsError("grid.variants", f"repeats a value: {s.grid.variants}")
