"""DVC stage `evaluate@<cell>`: label-only test predictions of one trained student, and its accuracy."""

import argparse

from distill_step_by_step.gpu import claim_gpu

claim_gpu()  # before torch is imported: pick this job's GPU from DSS_GPUS, if set

import json
from distill_step_by_step.cell import evaluate_cell  # noqa: E402
from distill_step_by_step.params import load_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True, help="checkpoint directory written by the distill stage")
    ap.add_argument("--out", required=True, help="results directory: predictions.jsonl, metrics.json")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    metrics = evaluate_cell(load_params(args.params), args.dataset, args.model, args.out)
    print(json.dumps({k: v for k, v in metrics.items() if k != "cell"}))


if __name__ == "__main__":
    main()
