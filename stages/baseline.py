"""DVC stage `baseline`: the teacher's few-shot test accuracy per dataset -> reports/baseline.json."""

import argparse
import json
from pathlib import Path

from distill_step_by_step.baseline import teacher_baseline
from distill_step_by_step.jsonio import write_json
from distill_step_by_step.params import get, load_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--test-sets", default="data/test_sets")
    ap.add_argument("--out", default="reports/baseline.json")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    result = {
        name: teacher_baseline(Path(args.corpus) / name, name, Path(args.test_sets) / f"{name}.ids")
        for name in get(load_params(args.params), "data.datasets")
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
