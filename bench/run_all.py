"""Run every benchmark and collect the figures: ``make bench`` (= ``.venv/bin/python bench/run_all.py``).

1. ``bench_cell.py``        one cell end to end, ours vs the authors' way (goal >= 2x)
2. ``bench_train_step.py``  training-step throughput, ours vs the authors' way (goal >= 1.2x); MFU on a GPU
3. ``bench_inference.py``   label-only test decoding vs rationale + label, the single-task way (goal >= 5x)
4. ``bench_demo_step.py``   the CPU demo's training step, ``train.output_vocabulary`` all vs seen (goal >= 1.2x)
5. ``bench_pipeline.py``    no-op ``dvc repro`` and ``dvc status`` (goal <= 3 s), default grid wall time
6. ``bench_lora.py``        a LoRA student's training step vs full fine-tuning (SmolLM2-135M): time and memory
Peak memory (RSS; GPU memory when there is one) is reported for every run of every variant.

Each script runs in its own process (its stdout is shown, its stderr goes to
``bench/results/logs/<name>.log``) and the figures of all of them, with the machine they came from, are
written to ``bench/results/latest.json``. ``--quick`` runs a ~2-minute version of everything (its figures
go to ``latest-quick.json``).

On a CPU the scripts use one torch thread by default (``--threads``): two OpenMP threads on a 2-core
machine that other processes also use slow down 5-10x whenever one core is taken, which makes timings
meaningless; one thread per process is also how many cells run side by side on a CPU machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import benchlib

SCRIPTS = {"cell": "bench_cell.py", "train_step": "bench_train_step.py", "inference": "bench_inference.py",
           "demo_step": "bench_demo_step.py", "pipeline": "bench_pipeline.py", "lora": "bench_lora.py"}


def git_state() -> dict:
    """The commit the figures were measured on, and which measured files differed from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=benchlib.ROOT, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD").strip() or None,
            "modified": [line[3:] for line in git("status", "--porcelain", "--", "src", "stages").splitlines()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a ~2-minute version (tiny step and example counts)")
    ap.add_argument("--only", default=",".join(SCRIPTS), help=f"comma-separated subset of {', '.join(SCRIPTS)}")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads per benchmark (default: 1 on a CPU-only machine, torch's default with a GPU; "
                         "0: torch's default)")
    ap.add_argument("--dataset", default="esnli", help="dataset of the cell and training-step benchmarks")
    ap.add_argument("--repo", default=str(benchlib.ROOT), help="repository for the pipeline benchmark")
    ap.add_argument("--grid-wall-seconds", type=float, default=None)
    ap.add_argument("--out", default=None,
                    help="where the JSON goes (default: bench/results/latest.json; latest-quick.json with --quick)")
    a = ap.parse_args()
    import torch

    threads = a.threads if a.threads is not None else (0 if torch.cuda.is_available() else 1)
    logs = benchlib.RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    parts = [p for p in a.only.split(",") if p]
    unknown = set(parts) - set(SCRIPTS)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    info = benchlib.machine_info()
    git = git_state()  # before the run: what was measured
    print(f"machine: {benchlib.describe_machine(info)}")
    print(f"torch threads per benchmark: {threads or 'torch default'}; {'quick' if a.quick else 'full'} run\n")
    sys.stdout.flush()
    results: dict = {}
    ratio_lines: list[str] = []
    failed: list[str] = []
    t_all = time.perf_counter()
    for name in parts:
        json_out = logs / f"{name}.json"
        json_out.unlink(missing_ok=True)
        cmd = [sys.executable, str(benchlib.BENCH / SCRIPTS[name]), "--json-out", str(json_out)]
        if a.quick:
            cmd.append("--quick")
        if name == "pipeline":
            cmd += ["--repo", a.repo]
            if a.grid_wall_seconds is not None:
                cmd += ["--grid-wall-seconds", str(a.grid_wall_seconds)]
        else:
            if threads:
                cmd += ["--threads", str(threads)]
            if name in ("cell", "train_step"):
                cmd += ["--dataset", a.dataset]
        t0 = time.perf_counter()
        with open(logs / f"{name}.log", "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=benchlib.ROOT)
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if line.startswith("RATIO"):
                    ratio_lines.append(line.rstrip())
            rc = proc.wait()
        seconds = time.perf_counter() - t0
        if rc != 0 or not json_out.is_file():
            failed.append(name)
            print(f"!! {SCRIPTS[name]} failed (exit {rc}); see {logs / (name + '.log')}")
            tail = (logs / f"{name}.log").read_text().strip().splitlines()[-5:]
            print("\n".join("   " + t for t in tail))
        else:
            results[name] = json.loads(json_out.read_text())
            results[name]["script_seconds"] = round(seconds, 1)
        print(f"({SCRIPTS[name]}: {seconds:.0f} s)\n")
        sys.stdout.flush()

    summary = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/run_all.py" + (" --quick" if a.quick else ""),
        "quick": a.quick,
        "threads": threads or "torch default",
        "machine": info,
        "git": git,
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "ratios": {k: v for r in results.values() for k, v in r.get("ratios", {}).items()},
        "benchmarks": results,
        "failed": failed,
    }
    out = Path(a.out or benchlib.RESULTS / ("latest-quick.json" if a.quick else "latest.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print("== Summary")
    for line in ratio_lines:
        print(line)
    print(f"all figures: {out} ({summary['total_seconds']:.0f} s in all)")
    if failed:
        print(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
