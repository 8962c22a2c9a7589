"""DVC stage `annotate@<dataset>`: build the rationale corpus of one dataset with the configured teacher."""

import argparse
import json

from distill_step_by_step.annotate import annotate_recorded
from distill_step_by_step.jsonio import write_json
from distill_step_by_step.params import get, load_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--out", required=True, help="corpus directory, e.g. data/corpus/cqa")
    ap.add_argument("--summary", required=True, help="corpus summary JSON, e.g. reports/corpus/cqa.json")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    teacher = get(load_params(args.params), "teacher.name")
    if teacher != "palm":
        raise SystemExit(f"unknown teacher {teacher!r}")
    summary = annotate_recorded(args.prepared, args.dataset, args.out)
    write_json(args.summary, summary)
    print(json.dumps(summary["splits"], indent=1))


if __name__ == "__main__":
    main()
