"""DVC stage `annotate@<dataset>`: build the rationale corpus of one dataset with the configured teacher.

``params.yaml: teacher.name`` is ``palm`` (the recorded completions), ``http`` (an OpenAI-compatible
server) or ``local`` (a ``transformers`` model here). Live teachers persist every completion under
``--cache-dir`` as it arrives, so an interrupted or failed run resumes where it stopped.
"""

import argparse
import json

from distill_step_by_step.errors import run_stage
from distill_step_by_step.jsonio import write_json
from distill_step_by_step.settings import load_settings
from distill_step_by_step.teachers.annotate import DEFAULT_CACHE_DIR, annotate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--out", required=True, help="corpus directory, e.g. data/corpus/cqa")
    ap.add_argument("--summary", required=True, help="corpus summary JSON, e.g. reports/corpus/cqa.json")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="resumable cache of live teachers' completions")
    args = ap.parse_args()
    summary = annotate(args.prepared, args.dataset, args.out, load_settings(args.params).teacher, cache_dir=args.cache_dir)
    write_json(args.summary, summary)
    print(json.dumps({"splits": summary["splits"], **({"run": summary["run"]} if "run" in summary else {})}, indent=1))


if __name__ == "__main__":
    run_stage(main, "annotate")
