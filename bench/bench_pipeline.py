"""Benchmark 4: pipeline overhead. Times ``dvc status`` and a no-op ``dvc repro`` in a repository where the
default grid has been run, and reports the default grid's wall time when it has been recorded.

``dvc repro`` is only started when ``dvc status`` says everything is up to date (so it is a no-op and
never trains anything); otherwise the script says what is out of date and skips it. The grid's wall
time comes from ``--grid-wall-seconds`` or from ``bench/results/default_grid.json``
(``{"wall_seconds": ..., "machine": ..., "date": ...}``, written by whoever ran the grid, e.g. with
``python bench/bench_pipeline.py --record-grid -- dvc repro``); the script also sums the training and
decoding seconds that the cells' runs logged in ``logs/models/**/runs.jsonl`` (the run log,
:mod:`distill_step_by_step.train.runlog`: each cell's last ``trained`` and ``finished`` events).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import benchlib
from benchlib import Report

from distill_step_by_step.train import runlog

GOAL_SECONDS = 3.0


def dvc_command() -> list[str]:
    exe = Path(sys.executable).with_name("dvc")
    return [str(exe)] if exe.exists() else [shutil.which("dvc") or "dvc"]


def run_timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def grid_size(repo: Path) -> dict | None:
    import yaml

    params = repo / "params.yaml"
    if not params.is_file():
        return None
    grid = (yaml.safe_load(params.read_text()) or {}).get("grid") or {}
    n = 1
    for key in ("datasets", "methods", "students", "fractions", "seeds"):
        n *= len(grid.get(key) or [])
    return {"cells": n, **{k: grid.get(k) for k in ("datasets", "methods", "students", "fractions", "seeds")}}


def recorded_cell_seconds(repo: Path) -> dict:
    """What the cells' runs logged about themselves (``logs/models/**/runs.jsonl``): per cell, the training
    seconds of its last ``trained`` event and the test decoding seconds of its last ``finished`` event."""
    train, decode, whole = [], [], []
    for path in sorted((repo / "logs" / "models").glob("**/runs.jsonl")):
        events = runlog.read_run_log(path)
        trained = [e for e in events if e.get("event") == "trained"]
        finished = [e for e in events if e.get("event") == "finished"]
        if trained:
            train.append(trained[-1].get("train_seconds") or 0.0)
        if finished:
            decode.append(finished[-1].get("decode_seconds") or 0.0)
            whole.append(finished[-1].get("seconds") or 0.0)
    return {"cells_trained": len(train), "train_seconds_sum": round(sum(train), 1),
            "cells_evaluated": len(decode), "test_decode_seconds_sum": round(sum(decode), 1),
            "cell_seconds_sum": round(sum(whole), 1)}


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=".", help="repository where the default grid has been run (default: .)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each command (median reported)")
    ap.add_argument("--grid-wall-seconds", type=float, default=None, help="the default grid's wall time, if measured")
    ap.add_argument("--skip-repro", action="store_true", help="time dvc status only")
    ap.add_argument("--record-grid", action="store_true",
                    help="run the command after -- in --repo, time it and write bench/results/default_grid.json")
    ap.add_argument("--quick", action="store_true", help="one run of each command")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    repo = Path(a.repo).resolve()
    if a.quick:
        a.repeats = 1
    benchlib.header("Benchmark 4: pipeline overhead (dvc status, no-op dvc repro, default grid wall time)")
    dvc = dvc_command()
    grid_file = benchlib.RESULTS / "default_grid.json"

    if a.record_grid:
        cmd = [c for c in a.command if c != "--"] or dvc + ["repro"]
        print(f"running {' '.join(cmd)} in {repo} ...")
        sys.stdout.flush()
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=repo).returncode
        wall = time.perf_counter() - t0
        if rc != 0:
            print(f"the command failed (exit {rc}) after {wall:.0f} s; nothing recorded")
            sys.exit(rc)
        grid_file.parent.mkdir(parents=True, exist_ok=True)
        grid_file.write_text(json.dumps({"wall_seconds": round(wall, 1), "command": " ".join(cmd),
                                         "grid": grid_size(repo), "machine": benchlib.machine_info(),
                                         "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2) + "\n")
        print(f"recorded {wall:.0f} s in {grid_file}")

    rep = Report("pipeline", settings={"repo": str(repo), "repeats": a.repeats, "goal_seconds": GOAL_SECONDS,
                                       "grid": grid_size(repo)})
    grid = rep.settings["grid"]
    if grid:
        print(f"grid in {repo}: {grid['cells']} cells ({len(grid['datasets'] or [])} datasets x {len(grid['methods'] or [])} "
              f"methods x {len(grid['students'] or [])} students x {len(grid['fractions'] or [])} fractions x "
              f"{len(grid['seeds'] or [])} seeds), each a train_score stage")
    if not (repo / "dvc.yaml").is_file():
        print(f"{repo} has no dvc.yaml: not a pipeline repository; nothing to time")
        rep.notes.append("no dvc.yaml")
        rep.write(a.json_out)
        return rep

    status_times, up_to_date, changed = [], None, []
    for _ in range(a.repeats):
        seconds, proc = run_timed(dvc + ["status", "--json"], repo)
        if proc.returncode != 0:
            print(f"dvc status failed: {proc.stderr.strip()[-500:]}")
            rep.notes.append("dvc status failed")
            break
        status_times.append(seconds)
        try:
            changed = sorted(json.loads(proc.stdout or "{}"))
        except json.JSONDecodeError:
            changed = ["(unparsed output)"]
        up_to_date = not changed
    rep.figures["dvc_status_seconds"] = round(benchlib.median(status_times), 3) if status_times else None
    rep.figures["dvc_status_runs"] = [round(t, 3) for t in status_times]
    rep.figures["up_to_date"] = up_to_date
    if status_times:
        print(f"dvc status: {rep.figures['dvc_status_seconds']:.2f} s (median of {len(status_times)}: "
              f"{', '.join(f'{t:.2f}' for t in status_times)})")

    repro_times: list[float] = []
    if up_to_date and not a.skip_repro:
        for _ in range(a.repeats):
            seconds, proc = run_timed(dvc + ["repro"], repo)
            if proc.returncode != 0:
                print(f"dvc repro failed: {proc.stderr.strip()[-500:]}")
                rep.notes.append("dvc repro failed")
                break
            if "Running stage" in proc.stdout:
                print("dvc repro ran a stage: the pipeline changed while timing; figure discarded")
                rep.notes.append("dvc repro was not a no-op")
                repro_times = []
                break
            repro_times.append(seconds)
        if repro_times:
            print(f"no-op dvc repro: {benchlib.median(repro_times):.2f} s (median of {len(repro_times)}: "
                  f"{', '.join(f'{t:.2f}' for t in repro_times)})")
    elif up_to_date is False:
        shown = ", ".join(changed[:6]) + (f", ... ({len(changed)} in all)" if len(changed) > 6 else "")
        msg = (f"the pipeline in {repo} is not up to date ({shown}): the default grid has not been run there (or "
               f"changed since), so a no-op dvc repro cannot be timed; run `dvc repro` there first")
        print(msg)
        rep.notes.append(msg)
    rep.figures["dvc_repro_noop_seconds"] = round(benchlib.median(repro_times), 3) if repro_times else None
    rep.figures["dvc_repro_noop_runs"] = [round(t, 3) for t in repro_times]

    # Every train_score stage is a fresh Python process: what starting one costs before any work
    # (interpreter, torch, transformers; `--help` exits right after the imports).
    startup: dict[str, float] = {}
    for stage in ("train_score",):
        script = repo / "stages" / f"{stage}.py"
        if not script.is_file():
            continue
        times = []
        for _ in range(a.repeats):
            seconds, proc = run_timed([sys.executable, str(script), "--help"], repo)
            if proc.returncode == 0:
                times.append(seconds)
        if times:
            startup[stage] = round(benchlib.median(times), 3)
    rep.figures["stage_startup_seconds"] = startup
    if startup:
        per_cell = sum(startup.values())
        line = "start-up of one stage process (imports, before any work): " + ", ".join(
            f"{k} {v:.1f} s" for k, v in startup.items())
        if grid:
            total = per_cell * grid["cells"]
            rep.figures["grid_startup_seconds_estimate"] = round(total, 1)
            line += f"; x {grid['cells']} cells = {total:.0f} s of the grid's wall time"
        print(line)

    wall, source = a.grid_wall_seconds, "--grid-wall-seconds"
    recorded = None
    if wall is None and grid_file.is_file():
        recorded = json.loads(grid_file.read_text())
        wall, source = recorded.get("wall_seconds"), str(grid_file.relative_to(benchlib.ROOT))
    rep.figures["default_grid_wall_seconds"] = wall
    if recorded:
        rep.figures["default_grid_record"] = recorded
    if wall is not None:
        extra = ""
        if recorded and recorded.get("machine"):
            extra = f" on {benchlib.describe_machine(recorded['machine'])}"
        print(f"default grid wall time: {wall:.0f} s ({wall / 60:.1f} min, from {source}{extra})")
        if rep.figures.get("grid_startup_seconds_estimate"):
            share = rep.figures["grid_startup_seconds_estimate"] / wall if wall else 0.0
            rep.figures["grid_startup_share"] = round(share, 3)
            print(f"  of which stage start-up (estimate): {100 * share:.0f}%")
    else:
        print("default grid wall time: not recorded (pass --grid-wall-seconds, or run the grid with "
              "`python bench/bench_pipeline.py --record-grid -- dvc repro`)")
    cells = recorded_cell_seconds(repo)
    rep.figures["recorded_by_cells"] = cells
    if cells["cells_trained"] or cells["cells_evaluated"]:
        print(f"logged by the cells' runs in {repo / 'logs' / 'models'}: {cells['cells_trained']} trained "
              f"({cells['train_seconds_sum']:.0f} s of training), {cells['cells_evaluated']} scored "
              f"({cells['test_decode_seconds_sum']:.0f} s of test decoding; {cells['cell_seconds_sum']:.0f} s per cell run "
              f"in all)")

    measured = [t for t in (rep.figures["dvc_status_seconds"], rep.figures["dvc_repro_noop_seconds"]) if t is not None]
    if measured:
        worst = max(measured)
        what = "no-op repro and status" if rep.figures["dvc_repro_noop_seconds"] is not None else "status only"
        print(rep.ratio("pipeline_overhead", GOAL_SECONDS / worst, 1.0, "headroom",
                        f"{GOAL_SECONDS:g} s budget / slowest of ({what}, {worst:.2f} s)"))
    else:
        print("RATIO pipeline_overhead = n/a (nothing could be timed)")
    rep.write(a.json_out)
    return rep


if __name__ == "__main__":
    main()
