"""The grid through real DVC in a throwaway git repository: the smoke profile end to end."""

import csv
import json
import re
import time

import pytest

from conftest import run

pytestmark = pytest.mark.slow


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def restored(output: str) -> list[str]:
    return re.findall(r"Stage '([^']+)' is cached - skipping run", output)


def test_smoke_grid_reproduces_caches_and_reruns_only_what_changed(project):
    # two cells at a time: one queued experiment per (dataset, method, student) slice, then the whole grid
    # in the workspace, where every cell comes back from the run-cache instead of training again
    first = run(["python", "-m", "distill_step_by_step.profiles", "run", "smoke", "--jobs", "2"], project).stdout
    assert "dvc queue start -j 2  (3 slices of the grid)" in first
    queue = run(["dvc", "queue", "status"], project).stdout
    assert queue.count("Success") == 3 and "Failed" not in queue
    assert not [s for s in ran(first) if s.startswith("train_test@")]
    cells = [s for s in restored(first) if s.startswith("train_test@")]
    assert len(cells) == 12 and "train_test@anli1-finetune-tiny-t5-0.5-0" in cells and "report" in ran(first)

    rows = list(csv.DictReader((project / "reports" / "results.csv").open()))
    students = [r for r in rows if r["method"] != "teacher"]
    assert len(students) == 12 and {r["seed"] for r in students} == {"0", "1"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 and r["n_train"] in ("45", "90") for r in students)
    teacher = [r for r in rows if r["method"] == "teacher"]
    assert len(teacher) == 1 and 0.5 < float(teacher[0]["accuracy"]) < 0.9
    report = (project / "reports" / "results.md").read_text()
    assert "distilling step-by-step" in report and "±" in report
    assert "Validation curves (mean over seeds)" in report
    for name in ("anli1_by_fraction.png", "anli1_by_size.png", "anli1_valid_curves.png"):
        assert (project / "reports" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every cell is a cached stage with its own checkpoint
    assert (project / "models" / "anli1" / "step_by_step" / "tiny-t5" / "f0.5-s1" / "model.safetensors").is_file()

    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert {"reports/results.csv", "reports/plots/anli1_by_fraction.png"} <= set(plots["data"])

    start = time.perf_counter()
    again = run(["dvc", "repro"], project).stdout
    assert ran(again) == [] and time.perf_counter() - start < 30

    # alpha is a parameter of step_by_step only: exactly its cells (and the report) rerun
    changed = run(["dvc", "exp", "run", "-S", "methods.step_by_step.alpha=0.3"], project).stdout
    rerun = ran(changed)
    assert sorted(s.split("@")[0] for s in rerun) == sorted(["train_test"] * 4 + ["report"])
    assert all("step_by_step" in s for s in rerun if "@" in s)
    rows = list(csv.DictReader((project / "reports" / "results.csv").open()))
    assert len([r for r in rows if r["method"] != "teacher"]) == 12
    diff = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], project).stdout)
    assert "reports/plots/anli1_by_fraction.png" in diff["data"]

    # a new fraction adds its cells and reruns no existing one
    more = ran(run(["dvc", "exp", "run", "-S", "grid.fractions=[0.25,0.5,1.0]", "-S", "grid.methods=[finetune]",
                    "-S", "grid.seeds=[0]"], project).stdout)
    assert sorted(more) == sorted(["split@anli1", "train_test@anli1-finetune-tiny-t5-0.25-0", "report"])
    rows = list(csv.DictReader((project / "reports" / "results.csv").open()))
    assert len([r for r in rows if r["method"] != "teacher"]) == 3

    # without its weights a cell still leaves its results, student.json and training curve (the GPU grid's mode)
    lean = ran(run(["dvc", "exp", "run", "-S", "train.keep_weights=false"], project).stdout)
    assert sorted(lean) == sorted([f"train_test@anli1-finetune-tiny-t5-{f}-0" for f in ("0.25", "0.5", "1.0")] + ["report"])
    cell = project / "models" / "anli1" / "finetune" / "tiny-t5" / "f0.25-s0"
    assert not list(cell.glob("*.safetensors")) and (cell / "training").is_dir()
    assert json.loads((cell / "student.json").read_text())["weights_kept"] is False
    assert json.loads((project / "results" / "anli1" / "finetune" / "tiny-t5" / "f0.25-s0" / "metrics.json").read_text())["n"] == 40
    assert not (project / ".resume" / "models" / "anli1" / "finetune" / "tiny-t5" / "f0.25-s0").exists()
