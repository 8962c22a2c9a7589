"""The foundation stages through real DVC in a throwaway git repository."""

import json

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
    (project / "params.yaml").write_text(params.replace("../shared/datasets/dss-datasets.zip", str(bad)))
    status = run(["dvc", "status", "prepare"], project).stdout
    assert "changed deps" in status
    proc = __import__("subprocess").run(["dvc", "repro", "prepare"], cwd=project, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "broken.zip: not a readable zip archive" in proc.stdout + proc.stderr
