"""``distill-predict``: label new inputs with any trained student (optionally with rationales).

Input (a file or stdin), one example per line, either plain text or a JSON object:

* plain text: the model input as is; for NLI students ``premise<TAB>hypothesis``;
* JSON: ``{"input": ...}``, ``{"premise": ..., "hypothesis": ...}`` or ``{"question": ..., "choices": [5]}``.

Output: one JSON object per line on stdout: ``{"input", "prediction"[, "rationale"]}`` (plus ``id`` if given).
A bad line (not UTF-8, malformed JSON, wrong field types, not five choices) gets a one-line error on
stderr naming its line; every good line is still answered, and the exit status is 1 if any line failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..data.datasets import DatasetSpec, get_spec, registry
from ..errors import DataError

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "vocab.json")  # one of them, beside tokenizer_config.json
NUMBERS = ("max_input_tokens", "max_label_tokens", "max_target_tokens")  # config entries that must be counts

@dataclass
class Inputs:
    """The records read from an input stream, with the line each came from, and the lines that were bad."""

    records: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)


def _from_json(obj: Any, spec: DatasetSpec | None) -> dict[str, Any]:
    # the checkpoint's dataset builds the input when the line has its fields, else any dataset whose fields it has
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON line should be an object, got {type(obj).__name__}")
    for candidate in ([spec] if spec is not None else []) + list(registry().values()):
        if all(f in obj for f in candidate.fields):
            return {**obj, "input": candidate.model_input(obj)}
    shapes = sorted({"+".join(f"'{f}'" for f in s.fields) for s in registry().values()})
    raise ValueError(f"a JSON line needs {' or '.join(shapes)}")


def parse_line(text: str, spec: DatasetSpec | None) -> dict[str, Any]:
    """One input line (without its newline) as a record the student can read; ``ValueError`` says what is wrong."""
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"malformed JSON ({exc.msg})") from None
        return _from_json(obj, spec)
    if "\0" in text:
        raise ValueError("binary data, not text")
    if spec is not None and spec.answer_type == "nli" and "\t" in text:
        premise, hypothesis = text.split("\t", 1)
        fields = {"premise": premise, "hypothesis": hypothesis}
        return {**fields, "input": spec.model_input(fields)}
    return {"input": text}


def read_inputs(lines: Iterable[bytes], spec: DatasetSpec | None, where: str) -> Inputs:
    """Every non-blank line as a record; a bad line becomes an error naming it, and reading goes on."""
    out = Inputs()
    for lineno, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
            if not text.strip():
                continue
            out.records.append(parse_line(text, spec))
            out.lines.append(lineno)
        except UnicodeDecodeError:
            out.errors.append(DataError("not UTF-8 text", path=where, line=lineno))
        except ValueError as exc:
            out.errors.append(DataError(str(exc), path=where, line=lineno))
    return out


def _open_input(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read the input ({exc.strerror})", path=path) from None


def check_checkpoint(path: str | Path) -> None:
    """What ``distill-predict`` needs of a checkpoint, checked before loading it, each fault one ``DataError``:
    its tokenizer files (without them ``transformers`` would build a default tokenizer and answer nonsense),
    a known method and dataset, and counts where counts belong."""
    from ..methods.registry import registry as method_registry
    from ..students.student import INFERENCE_KEY, inference_info

    path = Path(path)
    info = inference_info(path)
    config = str(path / "config.json")
    if not any(path.glob("*.safetensors")):
        return  # a cell that kept no weights: loading says so
    if not (path / "tokenizer_config.json").is_file() or not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise DataError("its tokenizer files are missing (tokenizer_config.json and one of "
                        f"{', '.join(TOKENIZER_FILES)})", path=str(path))
    method = info["method_config"].get("name") if isinstance(info["method_config"], dict) else None
    if method not in method_registry():
        raise DataError(f"{INFERENCE_KEY}.method_config.name: unknown method {method!r} (known: "
                        f"{', '.join(sorted(method_registry()))})", path=config)
    if info.get("dataset") is not None and info["dataset"] not in registry():
        raise DataError(f"{INFERENCE_KEY}.dataset: unknown dataset {info['dataset']!r} (known: "
                        f"{', '.join(sorted(registry()))})", path=config)
    for key in NUMBERS:
        value = info.get(key)
        if key in info and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError(f"{INFERENCE_KEY}.{key}: {value!r} is not a positive whole number", path=config)


def register_tasks(params: str | Path) -> None:
    """Make the tasks of a params file datasets, so that a student trained on one reads its inputs (no file:
    the paper's datasets alone)."""
    from ..data.datasets import register_task
    from ..data.tasks import TaskConfig
    from ..schema import as_mapping, parse
    from ..settings import read_params

    if Path(params).is_file():
        for name, raw in as_mapping(read_params(params).get("tasks"), "tasks").items():
            register_task(name, parse(TaskConfig, raw, f"tasks.{name}"))


def _fail(message: str) -> None:
    print(f"distill-predict: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Answer every good input line on stdout; report each bad one on stderr. Returns the exit status."""
    ap = argparse.ArgumentParser(prog="distill-predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a trained checkpoint directory (models/<dataset>/<method>/<student>/...)")
    ap.add_argument("--input", default="-", help="file with one example per line (default: stdin)")
    ap.add_argument("--rationales", action="store_true", help="also generate the rationale (step_by_step students)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--params", default="params.yaml",
                    help="where your own tasks are declared (params.yaml: tasks), if the student learned one")
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error("--batch-size must be at least 1")
    from .inference import load_for_inference, predict  # torch: only once the arguments are fine

    try:
        register_tasks(args.params)
        stream = _open_input(args.input)
        check_checkpoint(args.model)
        student, info, method = load_for_inference(args.model)
    except (DataError, FileNotFoundError, ValueError) as exc:  # a damaged checkpoint or task declaration: one line
        _fail(str(exc))
        return 1
    spec = get_spec(info["dataset"]) if info.get("dataset") else None
    with stream:
        inputs = read_inputs(stream, spec, "<stdin>" if args.input == "-" else args.input)
    for error in inputs.errors:
        _fail(str(error))
    if not inputs.records:
        if not inputs.errors:
            _fail(f"{'<stdin>' if args.input == '-' else args.input}: no input lines")
        return 1
    rows = predict(student, info, method, inputs.records, args.batch_size, args.rationales)
    for rec, row in zip(inputs.records, rows):
        out = {"input": rec["input"], "prediction": row["prediction"]}
        if rec.get("id") is not None:
            out = {"id": rec["id"], **out}
        if args.rationales:
            out["rationale"] = row.get("rationale")
        print(json.dumps(out, ensure_ascii=False))
    if inputs.errors:
        _fail(f"{len(inputs.errors)} of {len(inputs.errors) + len(inputs.records)} input lines failed (see above)")
    return 1 if inputs.errors else 0


if __name__ == "__main__":
    sys.exit(main())
