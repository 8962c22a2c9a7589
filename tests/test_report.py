"""Report logic: tables over seeds, paired comparisons and verdicts, missing cells, the committed reports."""

import numpy as np
import pytest

from distill_step_by_step.jsonio import write_json, write_jsonl
from distill_step_by_step.report.reading import collect, collect_curves, missing_cells
from distill_step_by_step.report.report import comparison_table, markdown, point_table
from distill_step_by_step.settings import GridConfig

GRID = GridConfig(["esnli"], ["finetune", "step_by_step"], ["small", "big"], [0.5, 1.0], [0, 1])
PARAMS = {"small": 10.0, "big": 40.0}
N = 200


def _write_cell(folder, correct: np.ndarray, params_m: float, n_train: int) -> None:
    write_jsonl(folder / "predictions.jsonl", [{"id": f"e{i}", "prediction": "x", "gold": "x" if c else "y",
                                                 "correct": bool(c), "exact": bool(c)} for i, c in enumerate(correct)])
    write_json(folder / "metrics.json", {"accuracy": round(float(correct.mean()), 4),
                                         "exact_accuracy": round(float(correct.mean()), 4), "n": len(correct),
                                         "record": {"params_m": params_m, "n_train": n_train}})


def _grid(tmp_path, correct_of, teacher_accuracy=0.75, grid=GRID):
    """Planted predictions: ``correct_of(method, student, fraction, seed)`` is each cell's 0/1 vector."""
    for dataset, method, student, fraction, seed in grid.cells():
        _write_cell(tmp_path / "results" / dataset / method / student / f"f{fraction}-s{seed}",
                    correct_of(method, student, fraction, seed), PARAMS[student], int(200 * fraction))
    teacher = np.arange(N) < int(teacher_accuracy * N)
    write_jsonl(tmp_path / "reports" / "teacher" / "esnli.jsonl",
                [{"id": f"e{i}", "correct": bool(c), "exact": bool(c)} for i, c in enumerate(teacher)])
    write_json(tmp_path / "reports" / "baseline.json", {"esnli": {"accuracy": float(teacher.mean()),
                                                                  "exact_accuracy": float(teacher.mean()), "n": N}})
    return collect(tmp_path / "results", tmp_path / "reports", grid)


def _first(k: int) -> np.ndarray:
    return (np.arange(N) < k).astype(np.float32)


def test_means_over_seeds_intervals_and_verdicts_on_the_claims(tmp_path):
    # step-by-step is right on 30 more examples than fine-tuning everywhere; the big student at 100% passes the teacher
    def correct(method, student, fraction, seed):
        k = 100 + (20 if student == "big" else 0) + int(20 * fraction) + seed + (30 if method == "step_by_step" else 0)
        return _first(k)

    res = _grid(tmp_path, correct)
    assert len(res.cells) == 16 and res.missing == []
    points = point_table(res, GRID).set_index(["method", "student", "fraction"])
    p = points.loc[("step_by_step", "big", 1.0)]
    assert p.accuracy == pytest.approx(np.mean([(100 + 20 + 20 + s + 30) / N for s in (0, 1)]), abs=1e-4)
    assert p.seed_std == pytest.approx(np.std([170 / N, 171 / N], ddof=1), abs=1e-4) and p.low < p.accuracy < p.high
    comps = comparison_table(res, GRID)
    sbs_ft = comps[(comps.against == "finetune") & (comps.fraction == comps.against_fraction)]
    assert len(sbs_ft) == 4 and set(sbs_ft.verdict) == {"ahead"} and all(sbs_ft.difference.round(4) == 0.15)
    vs_teacher = comps[(comps.against == "teacher")].set_index(["method", "student", "fraction"])
    assert vs_teacher.loc[("finetune", "small", 0.5)].verdict == "behind"
    text = markdown(res, point_table(res, GRID), comps, GRID, {"teacher_name": "PaLM 540B"})
    assert "- (a) step-by-step against fine-tuning at equal data, 4 (student, fraction) points: ahead at 4, " \
           "behind at 0, cannot tell at 0." in text
    assert "+15.0 points (95%:" in text and "quoted from Hsieh et al." in text
    # (b): step-by-step with half the data vs fine-tuning with all of it: 100+10+30 vs 100+20 right
    assert "- (b) small: the smallest fraction at which step-by-step is not behind fine-tuning with 100% of the " \
           "data: 50% (ahead" in text
    assert "intervals are percentile bootstraps over the test examples and the seeds" in text.lower()


def test_a_single_seed_is_reported_as_such(tmp_path):
    grid = GridConfig(["esnli"], ["finetune", "step_by_step"], ["small"], [1.0], [0])
    res = _grid(tmp_path, lambda *a: _first(120), grid=grid)
    comps = comparison_table(res, grid)
    assert set(comps.seeds) == {1}
    text = markdown(res, point_table(res, grid), comps, grid, {"teacher_name": "PaLM 540B"})
    assert "one seed: they cover test-example sampling only, not seed-to-seed variation" in text


def test_a_missing_cell_is_reported_as_missing(tmp_path):
    # a grid its workers have not finished: the report covers what is there and names what is not
    res = _grid(tmp_path, lambda *a: _first(100))
    (tmp_path / "results" / "esnli" / "finetune" / "big" / "f1.0-s1" / "metrics.json").unlink()
    res = collect(tmp_path / "results", tmp_path / "reports", GRID)
    assert len(res.cells) == 15
    assert [c.name for c in missing_cells(tmp_path / "results", GRID)] == ["esnli/finetune/big/f1.0-s1"]
    points = point_table(res, GRID).set_index(["method", "student", "fraction"])
    assert points.loc[("finetune", "big", 1.0)].seeds == 1  # what there is, on the seeds there are
    text = markdown(res, point_table(res, GRID), comparison_table(res, GRID), GRID, {"teacher_name": "PaLM 540B"})
    assert "1 of 16 cells of this grid have no results yet" in text and "esnli/finetune/big/f1.0-s1" in text


def test_validation_curves_say_whether_training_had_flattened(tmp_path):
    # step_by_step at full data still rises over its last quarter; every other point is flat after step 200
    for dataset, method, student, fraction, seed in GRID.cells():
        rising = method == "step_by_step" and fraction == 1.0
        curve = [{"step": s, "valid_accuracy": (0.3 + s / 1000 if rising else min(0.5, 0.3 + s / 1000)) + 0.01 * seed}
                 for s in (100, 200, 300, 400)]
        write_json(tmp_path / "results" / dataset / method / student / f"f{fraction}-s{seed}" / "valid_curve.json", curve)
    curves = {(c.method, c.student, c.fraction): c for c in collect_curves(tmp_path / "results", GRID)}
    assert len(curves) == 8 and curves[("finetune", "big", 0.5)].accuracies == pytest.approx([0.405, 0.505, 0.505, 0.505])
    assert curves[("step_by_step", "small", 1.0)].late_gain() == pytest.approx(0.1)  # 400 vs 300 (= 75% of 400)
    assert curves[("finetune", "small", 1.0)].late_gain() == pytest.approx(0.0)
    res = _grid(tmp_path, lambda *a: _first(120))
    text = markdown(res, point_table(res, GRID), comparison_table(res, GRID), GRID, {"teacher_name": "PaLM 540B"},
                    list(curves.values()))
    assert "best validation accuracy rose by at most +10.0 points (distilling step-by-step" in text
    assert "2 of 8 (method, student, fraction) points still gained more than 1 point" in text


def test_the_committed_demo_spans_methods_fractions_and_sizes_and_learns_in_every_cell():
    """The embedded default is a demo that learns: no committed cell at chance (at least 1.5x chance,
    e.g. 50% on e-SNLI), over at least two methods, two data fractions and two student sizes."""
    import pandas as pd

    from conftest import REPO
    from distill_step_by_step.data.datasets import get_spec
    from distill_step_by_step.settings import load_settings

    settings = load_settings(REPO / "params.yaml")
    grid = settings.grid
    assert len(grid.methods) >= 2 and len(grid.fractions) >= 2 and len(grid.students) >= 2
    cells = pd.read_csv(REPO / settings.paths.reports / "results.csv")
    assert len(cells) == len(grid.cells())  # every cell of the grid, from the report stage's table
    for row in cells.itertuples():
        floor = max(1.5 * (get_spec(row.dataset).chance or 0.0), 0.1)  # SVAMP has no closed answer set
        assert row.accuracy >= floor, (row.method, row.student, row.fraction, row.accuracy, floor)
    assert cells.groupby("student").params_m.first().nunique() == len(grid.students)  # each a different size


def test_each_claim_is_set_beside_the_paper_with_a_plain_verdict(tmp_path):
    # step-by-step ahead everywhere; at 50% it is ahead of fine-tuning at 100%; only step-by-step passes the teacher
    def correct(method, student, fraction, seed):
        return _first(100 + int(40 * fraction) + seed + (60 if method == "step_by_step" else 0))

    res = _grid(tmp_path, correct, teacher_accuracy=0.7)
    points, comps = point_table(res, GRID), comparison_table(res, GRID)
    text = markdown(res, points, comps, GRID, {"teacher_name": "PaLM 540B"})
    assert "here step-by-step is ahead at 4 of 4 (point, rival) pairs, behind at 0, and the intervals cannot tell at 0: " \
           "our numbers **agree**." in text
    assert "- (b) the paper finds step-by-step with 12.5% of e-SNLI ahead of standard fine-tuning with all of it; here " \
           "small with step-by-step is ahead of fine-tuning with 100% from 50% of the data: our numbers **agree only " \
           "with more data**." in text
    assert "here step-by-step is ahead of the teacher first with small (10M) at 50% of the data, standard " \
           "fine-tuning at no point: our numbers **agree**." in text


def test_a_point_with_fewer_seeds_than_the_grid_says_so(tmp_path):
    res = _grid(tmp_path, lambda m, s, f, seed: _first(120))
    one = res.cells[res.cells.seed == 0]
    res.cells = one
    res.correct = {k: v for k, v in res.correct.items() if k[4] == 0}
    text = markdown(res, point_table(res, GRID), comparison_table(res, GRID), GRID, {"teacher_name": "PaLM 540B"})
    assert "60.0% [" in text and ", 1 of 2 seeds |" in text


def test_claim_b_cannot_tell_yet_while_only_the_full_data_has_results(tmp_path):
    res = _grid(tmp_path, lambda m, s, f, seed: _first(150 if m == "step_by_step" else 120))
    keep = res.cells.fraction == 1.0
    res.cells = res.cells[keep]
    res.correct = {k: v for k, v in res.correct.items() if k[3] == 1.0}
    text = markdown(res, point_table(res, GRID), comparison_table(res, GRID), GRID, {"teacher_name": "PaLM 540B"})
    assert "here small has no step-by-step result with less than 100% of the data yet: our numbers **cannot tell " \
           "yet**." in text
