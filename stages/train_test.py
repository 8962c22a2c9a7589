"""DVC stage `train_test@<cell>`: train one student for one (dataset, method, student, fraction, seed), then
score its best checkpoint (by validation accuracy) on test with label-only decoding.

Starting it again after an interruption resumes the training from the last saved state (kept under .resume/).
"""

import argparse
import json

from distill_step_by_step.gpu import claim_gpu

claim_gpu()  # before torch is imported: pick this job's GPU slot from DSS_GPUS, if set

from distill_step_by_step.cell import Cell  # noqa: E402
from distill_step_by_step.errors import run_stage  # noqa: E402
from distill_step_by_step.settings import load_settings  # noqa: E402
from distill_step_by_step.train_test import train_and_test  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    Cell.add_arguments(ap)
    ap.add_argument("--model", required=True, help="the cell's checkpoint directory (student.json, curves, weights)")
    ap.add_argument("--out", required=True, help="the cell's results directory: predictions.jsonl, metrics.json")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cell = Cell.from_args(args)
    metrics = train_and_test(load_settings(args.params), cell, args.model, args.out)
    if metrics is not None:
        c = metrics["cell"]
        print(f"{cell.name}: best valid accuracy {c['best_valid_accuracy']:.4f} at step {c['best_step']}, "
              f"{c['params_m']}M params, {c['seconds_per_step']}s/step; test " +
              json.dumps({k: v for k, v in metrics.items() if k != "cell"}))


if __name__ == "__main__":
    run_stage(main, "train_test")
