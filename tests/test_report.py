"""Report logic: aggregation over seeds, who beats the teacher, and a missing cell is an error."""

import statistics

import pytest

from distill_step_by_step.errors import DataError
from distill_step_by_step.jsonio import write_json
from distill_step_by_step.report import (aggregate, beats_teacher, collect_curves, collect_rows, markdown,
                                         teacher_accuracy)
from distill_step_by_step.settings import GridConfig

GRID = GridConfig(["esnli"], ["finetune", "step_by_step"], ["small", "big"], [0.5, 1.0], [0, 1])
PARAMS = {"small": 10.0, "big": 40.0}


def _metrics(tmp_path, accuracy_of):
    for dataset, method, student, fraction, seed in GRID.cells():
        write_json(tmp_path / "results" / dataset / method / student / f"f{fraction}-s{seed}" / "metrics.json",
                   {"accuracy": accuracy_of(method, student, fraction, seed), "n": 100,
                    "cell": {"params_m": PARAMS[student], "n_train": int(200 * fraction)}})


def test_mean_spread_and_who_beats_the_teacher(tmp_path):
    # step_by_step gets better with data and size; finetune stays below the teacher
    def acc(method, student, fraction, seed):
        base = 0.5 + 0.1 * fraction + (0.1 if student == "big" else 0.0) + 0.01 * seed
        return base + (0.1 if method == "step_by_step" else 0.0)

    _metrics(tmp_path, acc)
    rows = collect_rows(tmp_path / "results", GRID, {"esnli": {"accuracy": 0.75, "exact_accuracy": 0.74}}, "PaLM 540B")
    assert len(rows) == 16 + 1 and teacher_accuracy(rows) == {"esnli": 0.75}
    cells = {(c.method, c.student, c.fraction): c for c in aggregate(rows)}
    c = cells[("step_by_step", "big", 1.0)]
    assert c.mean == pytest.approx(statistics.fmean([acc("step_by_step", "big", 1.0, s) for s in (0, 1)]))
    assert c.std == pytest.approx(statistics.stdev([acc("step_by_step", "big", 1.0, s) for s in (0, 1)]))
    wins = beats_teacher(list(cells.values()), {"esnli": 0.75})["esnli"]
    assert wins["finetune"].startswith("never")
    # 0.5 + 0.05 + 0.1 (big) + 0.1 = 0.755 > 0.75: beaten at fraction 0.5 by the big student only
    assert "smallest fraction 50% (big" in wins["step_by_step"]
    assert "smallest student big" in wins["step_by_step"]
    text = markdown(rows, GRID, {"teacher_name": "PaLM 540B"})
    assert "± " in text and "quoted from Hsieh et al." in text
    # claim (a) names only the methods the grid ran (no distillation here)
    assert "- (a) step-by-step beats fine-tuning at equal data at 4 of 4 (student, fraction) points" in text


def test_a_missing_cell_is_reported_as_missing(tmp_path):
    # a grid its workers have not finished: the report covers what is there and names what is not
    from distill_step_by_step.report import missing_cells

    _metrics(tmp_path, lambda *a: 0.5)
    missing = tmp_path / "results" / "esnli" / "finetune" / "big" / "f1.0-s1" / "metrics.json"
    missing.unlink()
    rows = collect_rows(tmp_path / "results", GRID, {"esnli": {"accuracy": 0.7}}, "PaLM 540B")
    assert len(rows) == 15 + 1
    assert [c.name for c in missing_cells(tmp_path / "results", GRID)] == ["esnli/finetune/big/f1.0-s1"]
    text = markdown(rows, GRID, {"teacher_name": "PaLM 540B", "missing": missing_cells(tmp_path / "results", GRID)})
    assert "1 of 16 cells of this grid have no results yet" in text and "esnli/finetune/big/f1.0-s1" in text


def test_validation_curves_say_whether_training_had_flattened(tmp_path):
    # step_by_step at full data still rises over its last quarter; every other point is flat after step 200
    for dataset, method, student, fraction, seed in GRID.cells():
        rising = method == "step_by_step" and fraction == 1.0
        curve = [{"step": s, "valid_accuracy": (0.3 + s / 1000 if rising else min(0.5, 0.3 + s / 1000)) + 0.01 * seed,
                  "loss": 1.0} for s in (100, 200, 300, 400)]
        write_json(tmp_path / "results" / dataset / method / student / f"f{fraction}-s{seed}" / "valid_curve.json", curve)
    curves = {(c.method, c.student, c.fraction): c for c in collect_curves(tmp_path / "results", GRID)}
    assert len(curves) == 8 and curves[("finetune", "big", 0.5)].accuracies == pytest.approx([0.405, 0.505, 0.505, 0.505])
    assert curves[("step_by_step", "small", 1.0)].late_gain() == pytest.approx(0.1)  # 400 vs 300 (= 75% of 400)
    assert curves[("finetune", "small", 1.0)].late_gain() == pytest.approx(0.0)
    _metrics(tmp_path, lambda *a: 0.6)
    rows = collect_rows(tmp_path / "results", GRID, {"esnli": {"accuracy": 0.75}}, "PaLM 540B")
    text = markdown(rows, GRID, {"teacher_name": "PaLM 540B"}, list(curves.values()))
    assert "rose by at most +10.0 points (distilling step-by-step" in text
    assert "2 of 8 (method, student, fraction) points still gained more than 1 point" in text


def _committed_grids():
    """Each committed report with the profile that made it: the CPU demo (params.yaml) and, once run, the GPU grid."""
    from conftest import REPO

    grids = [("reports", None)]
    if (REPO / "reports" / "gpu" / "results.csv").is_file():
        grids.append(("reports/gpu", "gpu"))
    return grids


@pytest.mark.parametrize("reports,profile", _committed_grids())
def test_the_committed_report_rebuilds_from_the_committed_per_cell_metrics(tmp_path, reports, profile):
    from conftest import REPO
    from distill_step_by_step.profiles import apply_profile, load_profile
    from distill_step_by_step.report import build_report
    from distill_step_by_step.settings import parse_settings, read_params

    params = read_params(REPO / "params.yaml")
    if profile:
        params = apply_profile(params, load_profile(str(REPO / "profiles" / f"{profile}.yaml")))
    settings = parse_settings(params)
    assert settings.paths.reports == reports
    build_report(settings, REPO / settings.paths.results, REPO / reports, tmp_path)
    for name in ("results.csv", "results.md"):
        assert (tmp_path / name).read_text() == (REPO / reports / name).read_text(), name
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in (REPO / reports / "plots").iterdir())


# What a student answering at random scores (SVAMP has no label set: any equation that is right counts).
CHANCE = {"esnli": 1 / 3, "anli1": 1 / 3, "cqa": 1 / 5, "svamp": 0.0}


def test_the_committed_demo_spans_methods_fractions_and_sizes_and_learns_in_every_cell():
    """The embedded default is a demo that learns: no committed cell at chance (at least 1.5x chance,
    e.g. 50% on e-SNLI), over at least two methods, two data fractions and two student sizes."""
    import json

    from conftest import REPO
    from distill_step_by_step.cell import Cell
    from distill_step_by_step.settings import load_settings

    settings = load_settings(REPO / "params.yaml")
    grid = settings.grid
    assert len(grid.methods) >= 2 and len(grid.fractions) >= 2 and len(grid.students) >= 2
    sizes = set()
    for dataset, method, student, fraction, seed in grid.cells():
        cell = Cell(dataset, method, student, str(fraction), seed)
        metrics = json.loads((cell.results_dir(REPO / settings.paths.results) / "metrics.json").read_text())
        floor = max(1.5 * CHANCE[dataset], 0.1)
        assert metrics["accuracy"] >= floor, (cell.name, metrics["accuracy"], floor)
        sizes.add(metrics["cell"]["params_m"])
    assert len(sizes) == len(grid.students)  # each student is a different size
