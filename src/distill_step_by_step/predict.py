"""``distill-predict``: label new inputs with any trained student (optionally with rationales).

Input (a file or stdin), one example per line, either plain text or a JSON object:

* plain text: the model input as is; for NLI students ``premise<TAB>hypothesis``;
* JSON: ``{"input": ...}``, ``{"premise": ..., "hypothesis": ...}`` or ``{"question": ..., "choices": [5]}``.

Output: one JSON object per line on stdout: ``{"input", "prediction"[, "rationale"]}`` (plus ``id`` if given).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from .datasets import T5_EOS, cqa_input, get_spec
from .errors import DataError
from .evaluation import load_for_inference, predict


def parse_line(line: str, task: str | None, where: str, lineno: int) -> dict[str, Any]:
    """One input line as a record the student can read."""
    text = line.rstrip("\n")
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", path=where, line=lineno) from None
        if "premise" in obj and "hypothesis" in obj:
            return {**obj, "input": T5_EOS.join([obj["premise"], obj["hypothesis"]])}
        if "question" in obj and "choices" in obj:
            return {**obj, "input": cqa_input(obj["question"], list(obj["choices"]))}
        if "input" in obj:
            return obj
        raise DataError("a JSON line needs 'input', 'premise'+'hypothesis' or 'question'+'choices'", path=where, line=lineno)
    if task == "nli" and "\t" in text:
        premise, hypothesis = text.split("\t", 1)
        return {"premise": premise, "hypothesis": hypothesis, "input": T5_EOS.join([premise, hypothesis])}
    return {"input": text}


def read_inputs(stream: TextIO, task: str | None, where: str) -> list[dict[str, Any]]:
    """All non-empty lines of a stream as records."""
    return [parse_line(line, task, where, i) for i, line in enumerate(stream, start=1) if line.strip()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="distill-predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a trained checkpoint directory (models/<dataset>/<method>/<student>/...)")
    ap.add_argument("--input", default="-", help="file with one example per line (default: stdin)")
    ap.add_argument("--rationales", action="store_true", help="also generate the rationale (step_by_step students)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    student, info, method = load_for_inference(args.model)
    task = get_spec(info["dataset"]).task if info.get("dataset") else None
    try:
        if args.input == "-":
            records = read_inputs(sys.stdin, task, "<stdin>")
        else:
            with open(args.input, encoding="utf-8") as fh:
                records = read_inputs(fh, task, args.input)
    except DataError as exc:
        raise SystemExit(f"distill-predict: {exc}") from None
    rows = predict(student, info, method, records, batch_size=args.batch_size, rationales=args.rationales)
    for rec, row in zip(records, rows):
        out = {"input": rec["input"], "prediction": row["prediction"]}
        if rec.get("id") is not None:
            out = {"id": rec["id"], **out}
        if args.rationales:
            out["rationale"] = row.get("rationale")
        print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
