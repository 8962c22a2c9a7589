"""DVC stage `train_score@<cell>`: train one student for one (dataset, method, student, fraction, seed), then
score its best checkpoint (by validation accuracy) on test with label-only decoding.

Starting it again after an interruption resumes the training from the last saved state (kept under .resume/).
"""

import argparse
import json

from distill_step_by_step.ops.gpu import claim_gpu

claim_gpu()  # before torch is imported: pick this job's GPU slot from DSS_GPUS, if set

from distill_step_by_step.train.cell import Cell, check_may_train  # noqa: E402
from distill_step_by_step.errors import run_stage  # noqa: E402
from distill_step_by_step.settings import load_settings  # noqa: E402
from distill_step_by_step.train.train_score import train_and_score  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    Cell.add_arguments(ap)
    ap.add_argument("--data", default="data", help="the pipeline's data folder (corpus/, splits/, test_sets/)")
    ap.add_argument("--model", required=True, help="the cell's checkpoint directory")
    ap.add_argument("--out", required=True, help="the cell's results: student.json, predictions, metrics, curve")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cell = Cell.from_args(args)
    settings = load_settings(args.params)
    check_may_train(args.params, cell)
    metrics = train_and_score(settings, cell, args.model, args.out, data_root=args.data)
    if metrics is not None:
        c = metrics["record"]
        print(f"{cell.name}: best valid accuracy {c['best_valid_accuracy']:.4f} at step {c['best_step']}, "
              f"{c['params_m']}M params; test " + json.dumps({k: v for k, v in metrics.items() if k != "record"}))


if __name__ == "__main__":
    run_stage(main, "train_score")
