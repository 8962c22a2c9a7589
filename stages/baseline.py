"""DVC stage `baseline`: the teacher's few-shot test accuracy per dataset -> reports/baseline.json."""

import argparse
import json
from pathlib import Path

from distill_step_by_step.errors import run_stage
from distill_step_by_step.jsonio import write_json, write_jsonl
from distill_step_by_step.settings import load_settings
from distill_step_by_step.teachers.baseline import teacher_baseline, teacher_predictions
from distill_step_by_step.train.cell import test_ids_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--test-sets", default="data/test_sets")
    ap.add_argument("--out", default="reports/baseline.json")
    ap.add_argument("--predictions", default="reports/teacher", help="the teacher's answer per test example, per dataset")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    datasets = load_settings(args.params).data.datasets
    result = {name: teacher_baseline(Path(args.corpus) / name, name, test_ids_path(args.test_sets, name)) for name in datasets}
    for name in datasets:
        write_jsonl(Path(args.predictions) / f"{name}.jsonl",
                    teacher_predictions(Path(args.corpus) / name, name, test_ids_path(args.test_sets, name)))
    write_json(args.out, result)
    print(json.dumps({name: {k: v for k, v in r.items() if k != "rules"} for name, r in result.items()}, indent=1))


if __name__ == "__main__":
    run_stage(main, "baseline")
