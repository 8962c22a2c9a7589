"""DVC stage `prepare`: normalise the authors' archive (local zip/folder or URL) and the tasks of
params.yaml (their own files or Hub datasets) into data/prepared."""

import argparse

from distill_step_by_step.data.prepare import prepare
from distill_step_by_step.errors import run_stage
from distill_step_by_step.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True, help="archive path or http(s) URL (params: data.source)")
    ap.add_argument("--out", default="data/prepared")
    ap.add_argument("--params", default="params.yaml", help="read data.datasets from here")
    args = ap.parse_args()
    summary = prepare(args.source, args.out, load_settings(args.params).data.datasets)
    for name, info in summary["datasets"].items():
        sizes = ", ".join(f"{s}={v['n']}" for s, v in info["splits"].items())
        print(f"{name}: {sizes}" + (f"  ({info['note']})" if "note" in info else ""))


if __name__ == "__main__":
    run_stage(main, "prepare")
