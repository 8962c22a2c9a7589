"""DVC stage `evaluate@<cell>`: label-only test predictions of one trained student, and its accuracy."""

import argparse
import json

from distill_step_by_step.gpu import claim_gpu

claim_gpu()  # before torch is imported: pick this job's GPU slot from DSS_GPUS, if set

from distill_step_by_step.cell import Cell  # noqa: E402
from distill_step_by_step.errors import run_stage  # noqa: E402
from distill_step_by_step.evaluation import evaluate_cell  # noqa: E402
from distill_step_by_step.settings import load_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    Cell.add_arguments(ap)
    ap.add_argument("--model", required=True, help="checkpoint directory written by the train stage")
    ap.add_argument("--out", required=True, help="results directory: predictions.jsonl, metrics.json")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cell = Cell.from_args(args)
    metrics = evaluate_cell(cell, load_settings(args.params).evaluate, args.model, args.out)
    print(json.dumps({k: v for k, v in metrics.items() if k != "cell"}))


if __name__ == "__main__":
    run_stage(main, "evaluate")
