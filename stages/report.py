"""DVC stage `report`: results.csv, results.md and plots from every grid cell and the teacher baseline."""

import argparse
import json

from distill_step_by_step.errors import run_stage
from distill_step_by_step.report.report import build_report
from distill_step_by_step.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="results")
    ap.add_argument("--reports", default="reports", help="where baseline.json, corpus/ and splits/ are")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    summary = build_report(load_settings(args.params), args.results, args.reports, args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    run_stage(main, "report")
