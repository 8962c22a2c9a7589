"""DVC stage `train@<cell>`: train one student for one (dataset, method, student, fraction, seed).

Starting it again after an interruption resumes from the last saved state (kept under .resume/).
"""

import argparse

from distill_step_by_step.gpu import claim_gpu

claim_gpu()  # before torch is imported: pick this job's GPU slot from DSS_GPUS, if set

from distill_step_by_step.cell import Cell  # noqa: E402
from distill_step_by_step.errors import run_stage  # noqa: E402
from distill_step_by_step.settings import load_settings  # noqa: E402
from distill_step_by_step.training import train_cell  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    Cell.add_arguments(ap)
    ap.add_argument("--out", required=True, help="checkpoint directory (save_pretrained + student.json)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cell = Cell.from_args(args)
    summary = train_cell(load_settings(args.params), cell, args.out)
    print(f"{cell.name}: best valid accuracy {summary['best_valid_accuracy']:.4f} at step "
          f"{summary['best_step']}, {summary['params_m']}M params, {summary['seconds_per_step']}s/step")


if __name__ == "__main__":
    run_stage(main, "train")
