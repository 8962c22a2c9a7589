"""DVC stage `report`: results.csv, results.md and plots from every grid cell and the teacher baseline."""

import argparse
import json

from distill_step_by_step.params import load_params
from distill_step_by_step.report import build_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="results")
    ap.add_argument("--baseline", default="reports/baseline.json")
    ap.add_argument("--corpus-reports", default="reports/corpus")
    ap.add_argument("--splits", default="data/splits")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    summary = build_report(load_params(args.params), args.results, args.baseline, args.corpus_reports, args.splits, args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
