"""DVC stage `split@<dataset>`: validation/test manifests and nested training fractions per seed."""

import argparse
import json

from distill_step_by_step.data.splits import write_splits
from distill_step_by_step.errors import run_stage
from distill_step_by_step.jsonio import write_json
from distill_step_by_step.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", required=True, help="corpus directory of the dataset")
    ap.add_argument("--out", required=True, help="manifest directory, e.g. data/splits/cqa")
    ap.add_argument("--test-out", required=True, help="test id manifest, e.g. data/test_sets/cqa.ids")
    ap.add_argument("--summary", required=True, help="split summary JSON, e.g. reports/splits/cqa.json")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    settings = load_settings(args.params)
    summary = write_splits(args.corpus, args.out, args.test_out, settings.split, settings.grid.fractions,
                           settings.grid.seeds)
    write_json(args.summary, summary)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    run_stage(main, "split")
