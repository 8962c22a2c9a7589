"""The repository's own pipeline through real DVC in a throwaway git repository: a profile as an experiment."""

import csv
import json
import re
import time

import pytest
import yaml

from conftest import run

pytestmark = pytest.mark.slow


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def test_smoke_profile_reproduces_caches_and_reruns_only_what_changed(project):
    # one seed of the smoke profile's two (the grid tests run both): 6 cells
    first = run(["python", "-m", "distill_step_by_step.profiles", "run", "smoke", "-S", "grid.seeds=[0]"], project).stdout
    cells = [s for s in ran(first) if s.startswith("train_score@")]
    assert len(cells) == 6 and "train_score@anli1-finetune-tiny-t5-0.5-0" in cells and "report" in ran(first)

    rows = list(csv.DictReader((project / "reports" / "results.csv").open()))
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 and r["n_train"] in ("45", "90") for r in rows)
    assert all(0.5 < float(r["teacher_accuracy"]) < 0.9 for r in rows)
    comparisons = list(csv.DictReader((project / "reports" / "comparisons.csv").open()))
    # per fraction: step-by-step against 2 rivals and 3 methods against the teacher; and 0.5 against finetune at 1.0
    assert {r["verdict"] for r in comparisons} <= {"ahead", "behind", "cannot tell"} and len(comparisons) == 2 * (2 + 3) + 1
    report = (project / "reports" / "results.md").read_text()
    assert "distilling step-by-step" in report and "95% interval" in report
    assert "Validation curves (mean over seeds)" in report
    for name in ("anli1_by_fraction.png", "anli1_by_size.png", "anli1_valid_curves.png"):
        assert (project / "reports" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # with run.keep_weights false (the smoke profile's) a cell keeps its checkpoint's config alone
    cell = project / "models" / "anli1" / "finetune" / "tiny-t5" / "f0.5-s0"
    assert [p.name for p in cell.iterdir()] == ["config.json"]
    record = json.loads((project / "results" / "demo" / "anli1" / "finetune" / "tiny-t5" / "f0.5-s0" / "student.json").read_text())
    assert record["steps"] == 40 and "train_seconds" not in record and "history" not in record

    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    assert {"reports/accuracy_by_fraction.csv", "reports/valid_curves.csv", "reports/plots/anli1_by_fraction.png"} <= set(plots["data"])

    start = time.perf_counter()
    again = run(["dvc", "repro"], project).stdout
    assert ran(again) == [] and time.perf_counter() - start < 30

    # settings that change how cells run, not what they compute, change no stage (`dvc exp run --dry` cannot
    # show it: DVC 3.67 dry-runs in a temporary copy without the workspace's DVC-tracked archive)
    # Every one of them edited at once: a stage that depended on any of them would be listed.
    params = project / "params.yaml"
    applied = params.read_text()
    edited = yaml.safe_load(applied)
    changes = {"log_every": 7, "valid_batch_size": 5, "test_batch_size": 3, "keep_weights": True,
               "save_every_minutes": 1, "save_every": 2}
    assert set(changes) == set(edited["run"]), edited["run"]  # every run setting, no more
    edited["run"].update(changes)
    params.write_text(yaml.safe_dump(edited, sort_keys=False))
    status = run(["dvc", "status", "dvc.yaml"], project).stdout
    assert status.strip() == "Data and pipelines are up to date.", status
    params.write_text(applied)

    # alpha is a parameter of step_by_step only: exactly its cells (and the report) rerun
    changed = run(["dvc", "exp", "run", "-S", "methods.step_by_step.alpha=0.3"], project).stdout
    rerun = ran(changed)
    assert sorted(s.split("@")[0] for s in rerun) == sorted(["train_score"] * 2 + ["report"])
    assert all("step_by_step" in s for s in rerun if "@" in s)
    diff = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], project).stdout)
    assert "reports/plots/anli1_by_fraction.png" in diff["data"]

    # a new fraction adds its cells and reruns no existing one
    more = ran(run(["dvc", "exp", "run", "-S", "grid.fractions=[0.25,0.5,1.0]", "-S", "grid.methods=[finetune]",
                    "-S", "grid.seeds=[0]"], project).stdout)
    assert sorted(more) == sorted(["split@anli1", "train_score@anli1-finetune-tiny-t5-0.25-0", "report"])
    rows = list(csv.DictReader((project / "reports" / "results.csv").open()))
    assert len(rows) == 3
    assert not (project / ".resume" / "models" / "anli1" / "finetune" / "tiny-t5" / "f0.25-s0").exists()


def test_make_run_trains_cells_side_by_side_and_leaves_the_pipeline_up_to_date(project):
    """`make run`'s recipe (this venv, not installed again) on the smoke profile as the embedded default: the
    data stages, then the cells two at a time, each in its own `dvc repro -s`, then the report."""
    import sys
    from pathlib import Path

    from distill_step_by_step.ops.profiles import apply_profile, load_profile

    params = apply_profile(yaml.safe_load((project / "params.yaml").read_text()),
                           load_profile(str(project / "profiles" / "smoke.yaml")))
    params["grid"].update(seeds=[0], methods=["finetune", "step_by_step"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    venv = Path(sys.executable).parents[1]
    out = run(["make", "run", f"VENV={venv}", "-o", f"{venv}/.installed"], project, timeout=1200).stdout
    cells = [s for s in ran(out) if s.startswith("train_score@")]
    assert len(cells) == 4 and ran(out)[-1] == "report", out[-3000:]
    assert run(["dvc", "status", "dvc.yaml"], project).stdout.strip() == "Data and pipelines are up to date."
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert all(c in lock for c in cells) and "report" in lock
    # two at a time: some cell started before another finished
    spans = []
    for log in project.glob("logs/**/runs.jsonl"):
        events = [json.loads(line) for line in log.read_text().splitlines()]
        spans.append((next(e["time"] for e in events if e["event"] == "started"),
                      next(e["time"] for e in events if e["event"] == "finished")))
    spans.sort()
    assert len(spans) == 4 and any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans
    assert ran(run(["make", "run", f"VENV={venv}", "-o", f"{venv}/.installed"], project).stdout) == []
