"""DVC stage `split@<dataset>`: validation/test manifests and nested training fractions per seed."""

import argparse
import json

from distill_step_by_step.params import get, load_params
from distill_step_by_step.splits import SplitConfig, write_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", required=True, help="corpus directory of the dataset")
    ap.add_argument("--out", required=True, help="manifest directory, e.g. data/splits/cqa")
    ap.add_argument("--test-out", required=True, help="test id manifest, e.g. data/test_sets/cqa.ids")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)
    cfg = SplitConfig.from_params({**get(params, "split"), "fractions": get(params, "grid.fractions"),
                                   "seeds": get(params, "grid.seeds")})
    print(json.dumps(write_splits(args.corpus, args.out, args.test_out, cfg), indent=1))


if __name__ == "__main__":
    main()
