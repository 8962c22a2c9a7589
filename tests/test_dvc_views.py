"""DVC's own views of the results on a fresh clone: metrics and plots that every clone has, no warnings."""

import json

import pytest

from conftest import copy_project, run


@pytest.mark.slow
def test_a_fresh_clone_shows_each_pipelines_summary_metrics_and_plots_without_a_warning(tmp_path):
    repo = copy_project(tmp_path, committed_grids=True)
    shown = run(["dvc", "metrics", "show", "--json"], repo)
    assert "failed to load" not in shown.stdout + shown.stderr, shown.stderr
    files = json.loads(shown.stdout)[""]["data"]
    assert set(files) == {"reports/summary.json", *(f"reports/{g}/summary.json" for g in ("smoke", "cpu", "gpu", "cpu-pilots"))}
    demo = files["reports/summary.json"]["data"]["demo"]["esnli"]
    assert isinstance(demo["teacher"], float) and demo["sbs"]["minilm-l6-d1"]["f100"] > 33.3
    assert demo["sbs-ft"]["minilm-l6-d1"]["f100"] == pytest.approx(
        demo["sbs"]["minilm-l6-d1"]["f100"] - demo["ft"]["minilm-l6-d1"]["f100"], abs=0.02)

    def numbers(node):
        return all(numbers(v) for v in node.values()) if isinstance(node, dict) else isinstance(node, (int, float))

    assert all(numbers(f["data"]) for f in files.values())  # numbers only: no sentence becomes a column
    plots = run(["dvc", "plots", "show", "--json"], repo)
    assert "failed to load" not in plots.stdout + plots.stderr, plots.stderr
    shown = json.loads(plots.stdout)["data"]
    by_fraction = shown["reports/accuracy_by_fraction.csv"][0]["content"]
    rows = by_fraction["data"]["values"]
    assert {r["series"] for r in rows} == {"ft minilm-l6-d1", "ft minilm-l6", "sbs minilm-l6-d1", "sbs minilm-l6", "teacher"}
    assert by_fraction["spec"]["encoding"]["color"]["field"] == "series"  # the repository's template, one line each
    assert by_fraction["spec"]["encoding"]["strokeDash"]["field"] == "rev"  # `dvc plots diff`: dashed by revision
    curves = shown["reports/valid_curves.csv"][0]["content"]["data"]["values"]
    assert {r["series"] for r in curves} >= {"sbs minilm-l6-d1 100%", "ft minilm-l6 50%"}
    exps = run(["dvc", "exp", "show", "--no-pager", "--csv"], repo)
    assert "WARNING" not in exps.stderr and "ERROR" not in exps.stderr, exps.stderr
    assert "demo.esnli.sbs-ft.minilm-l6-d1.f100" in exps.stdout.splitlines()[0]  # the committed demo's metrics
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
