"""The foundation stages through real DVC in a throwaway git repository."""

import json
import os
import subprocess

import pytest

from conftest import run

pytestmark = pytest.mark.slow


def test_repro_baseline_then_nothing_to_do(project):
    out = run(["dvc", "repro", "baseline"], project).stdout
    assert "Running stage 'prepare'" in out and "Running stage 'baseline'" in out
    baseline = json.loads((project / "reports" / "baseline.json").read_text())
    assert set(baseline) == {"cqa", "svamp", "esnli", "anli1"}
    for name, res in baseline.items():
        assert 0.5 < res["accuracy"] < 0.95 and res["n"] > 0 and res["unparsed"] >= 0
        assert set(res["rules"]) == {"lenient", "exact"}
    # the full official test sets under the authors' rule: their figures (Hsieh et al., 2023)
    full = {name: (res["full_test"]["exact_correct"], res["full_test"]["n"]) for name, res in baseline.items()}
    assert full == {"cqa": (943, 1221), "svamp": (148, 200), "esnli": (7171, 9824), "anli1": (656, 1000)}
    assert baseline["cqa"]["full_test"]["exact_accuracy"] == 0.7723 < baseline["cqa"]["full_test"]["accuracy"]
    corpus = json.loads((project / "reports" / "corpus" / "svamp.json").read_text())
    assert corpus["splits"]["train"]["rows"] == 800
    again = run(["dvc", "repro", "baseline"], project).stdout
    assert "Running stage" not in again


def test_changed_source_is_noticed_and_bad_source_fails_cleanly(project, mirror):
    run(["dvc", "repro", "prepare"], project)
    # a different copy of the archive with one byte of a member changed is a changed dependency
    params = (project / "params.yaml").read_text()
    bad = project.parent / "broken.zip"
    bad.write_bytes(b"not a zip")
    (project / "params.yaml").write_text(params.replace("source: data/raw/dss-datasets.zip", f"source: {bad}"))
    status = run(["dvc", "status", "prepare"], project).stdout
    assert "changed deps" in status
    proc = subprocess.run(["dvc", "repro", "prepare"], cwd=project, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "broken.zip: not a readable zip archive" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr  # a data error is one line, not a traceback


def test_a_bad_setting_stops_a_stage_with_one_line_naming_the_key(project):
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("split:\n", "split:\n  pool_szie: 10\n", 1))
    proc = subprocess.run(["dvc", "repro", "prepare"], cwd=project, capture_output=True, text=True)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "prepare: error: params.yaml: split.pool_szie: unknown setting" in err and "Traceback" not in err
    proc = subprocess.run(["python", "stages/prepare.py", "--source", "x"], cwd=project, capture_output=True,
                          text=True, env={**os.environ, "DSS_TRACEBACK": "1"})
    assert "Traceback" in proc.stderr and "SettingsError" in proc.stderr  # the traceback on request


def test_make_data_without_the_archive_anywhere_says_why(tmp_path):
    from conftest import copy_project
    import shutil
    import sys
    from pathlib import Path

    repo = copy_project(tmp_path)
    (tmp_path / "shared").unlink()  # no ../shared
    shutil.rmtree(repo / ".dvc" / "cache")  # nothing in DVC's cache, and no remote set
    (repo / "data" / "raw" / "dss-datasets.zip").unlink()
    venv = Path(sys.executable).parents[1]
    proc = subprocess.run(["make", "data", f"VENV={venv}", "-o", f"{venv}/.installed"], cwd=repo,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "the corpora archive is in neither DVC's cache, a DVC remote nor its source" in proc.stderr, proc.stderr
