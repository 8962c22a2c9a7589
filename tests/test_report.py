"""Report logic: tables over seeds, paired comparisons and verdicts, missing cells, collapsed cells, per-class
results, the committed reports."""

import numpy as np
import pytest

from distill_step_by_step.data.parsing import NLI_LABELS
from distill_step_by_step.jsonio import write_json, write_jsonl
from distill_step_by_step.report.reading import collect, collect_curves, missing_cells
from distill_step_by_step.report.report import comparison_table, markdown, point_table
from distill_step_by_step.settings import GridConfig

GRID = GridConfig(["esnli"], ["finetune", "step_by_step"], ["small", "big"], [0.5, 1.0], [0, 1])
PARAMS = {"small": 10.0, "big": 40.0}
N = 200


def _gold(i: int) -> str:
    return NLI_LABELS[i % 3]  # the planted test set: the three labels in turn


def _answers(correct: np.ndarray) -> list[dict]:
    """Predictions right where ``correct`` says, else the next label: every label is predicted."""
    return [{"id": f"e{i}", "prediction": _gold(i) if c else NLI_LABELS[(i + 1) % 3], "gold": _gold(i),
             "correct": bool(c), "exact": bool(c)} for i, c in enumerate(correct)]


def _write_cell(folder, correct: np.ndarray, params_m: float, n_train: int, rows: list[dict] | None = None) -> None:
    write_jsonl(folder / "predictions.jsonl", rows if rows is not None else _answers(correct))
    write_json(folder / "metrics.json", {"accuracy": round(float(correct.mean()), 4),
                                         "exact_accuracy": round(float(correct.mean()), 4), "n": len(correct),
                                         "record": {"params_m": params_m, "n_train": n_train}})


def _grid(tmp_path, correct_of, teacher_accuracy=0.75, grid=GRID):
    """Planted predictions: ``correct_of(method, student, fraction, seed)`` is each cell's 0/1 vector."""
    for dataset, method, student, fraction, seed in grid.cells():
        _write_cell(tmp_path / "results" / dataset / method / student / f"f{fraction}-s{seed}",
                    correct_of(method, student, fraction, seed), PARAMS[student], int(200 * fraction))
    teacher = np.arange(N) < int(teacher_accuracy * N)
    write_jsonl(tmp_path / "reports" / "teacher" / "esnli.jsonl", _answers(teacher))
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
    assert not cells.collapsed.any()  # and none of its cells collapsed
    per_class = pd.read_csv(REPO / settings.paths.reports / "per_class.csv")
    points = len(grid.cells()) // len(grid.seeds)
    assert len(per_class) == 3 * (points + 1)  # e-SNLI's three classes at each point and the teacher's


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


def test_claim_b_while_fine_tuning_lacks_the_full_data_compares_with_its_most_data_so_far(tmp_path):
    # fine-tuning has 50% only: step-by-step at 50% is set beside it, not called "no result with less"
    grid = GridConfig(["esnli"], ["finetune", "step_by_step"], ["small"], [0.25, 0.5, 1.0], [0, 1])
    res = _grid(tmp_path, lambda m, s, f, seed: _first(int(200 * f) if m == "finetune" else 40 + seed), grid=grid)
    keep = ~((res.cells.method == "finetune") & (res.cells.fraction != 0.5)) & (res.cells.fraction != 1.0)
    res.cells = res.cells[keep]
    res.correct = {k: v for k, v in res.correct.items()
                   if k[3] != 1.0 and (k[1] != "finetune" or k[3] == 0.5)}
    comps = comparison_table(res, grid)
    reach = comps[(comps.against == "finetune") & (comps.against_fraction != comps.fraction)]
    assert reach[["fraction", "against_fraction", "verdict"]].values.tolist() == [[0.25, 0.5, "behind"]]
    text = markdown(res, point_table(res, grid), comps, grid, {"teacher_name": "PaLM 540B"})
    assert "here small with step-by-step is ahead of fine-tuning with 50% (its most data so far) at no smaller " \
           "fraction: our numbers **do not show it so far**." in text
    assert "- (b) small: the smallest fraction at which step-by-step is not behind fine-tuning with 50% of the data: " \
           "none in this grid; closest: 50% (behind, -29.8 points" in text

    # ahead of fine-tuning with 50% says nothing yet of fine-tuning with all the data
    res2 = _grid(tmp_path / "ahead", lambda m, s, f, seed: _first(60 + seed if m == "finetune" else 190), grid=grid)
    res2.cells = res2.cells[keep.values]
    res2.correct = {k: v for k, v in res2.correct.items()
                    if k[3] != 1.0 and (k[1] != "finetune" or k[3] == 0.5)}
    text = markdown(res2, point_table(res2, grid), comparison_table(res2, grid), grid, {"teacher_name": "PaLM 540B"})
    assert "ahead of fine-tuning with 50% (its most data so far) from 25% of the data: our numbers **cannot tell " \
           "yet**." in text


# ----- collapsed cells -----

def _constant(answer: str) -> list[dict]:
    """A collapsed cell's predictions: ``answer`` for every example."""
    return [{"id": f"e{i}", "prediction": answer, "gold": _gold(i), "correct": _gold(i) == answer,
             "exact": _gold(i) == answer} for i in range(N)]


def test_a_planted_constant_predictor_is_flagged_listed_and_kept_in_the_mean(tmp_path):
    from distill_step_by_step.report.collapse import collapse_table, collapsed_cells
    from distill_step_by_step.report.intervals import Bootstrap
    from distill_step_by_step.report.report import results_table
    from distill_step_by_step.train.cell import Cell

    grid = GridConfig(["esnli"], ["finetune", "step_by_step"], ["small"], [0.5], [0, 1])
    _grid(tmp_path, lambda *a: _first(120), grid=grid)  # every cell learns: 60%, each label predicted
    rows = _constant("neutral")  # seed 1 of fine-tuning says 'neutral' to all: right on 67 of 200
    _write_cell(tmp_path / "results" / "esnli" / "finetune" / "small" / "f0.5-s1",
                np.array([r["correct"] for r in rows], np.float32), 10.0, 100, rows)
    res = collect(tmp_path / "results", tmp_path / "reports", grid)
    flags = collapse_table(res, {"esnli": Bootstrap(N)})
    flagged = flags[flags.collapsed]
    assert [(f.method, f.seed) for f in flagged.itertuples()] == [("finetune", 1)]
    # the test set's labels in turn: 67 entailment, 67 neutral, 66 contradiction, so the majority rate is 33.5%
    assert flagged.reasons.iloc[0].startswith("one answer, 'neutral', for 100.0% of the test examples; "
                                              "accuracy 33.5% (95%:")
    assert flagged.reasons.iloc[0].endswith("not above chance (33.3%) or the majority class's rate (33.5%)")
    points = point_table(res, grid).set_index(["method", "student", "fraction"])
    assert points.loc[("finetune", "small", 0.5)].accuracy == pytest.approx((0.6 + 0.335) / 2)  # kept in the mean
    table = results_table(res, point_table(res, grid), flags)
    assert table.collapsed.tolist() == [False, True, False, False]
    assert table.collapse_reasons.fillna("").str.len().gt(0).tolist() == [False, True, False, False]
    text = markdown(res, point_table(res, grid), comparison_table(res, grid), grid, {"teacher_name": "PaLM 540B"})
    assert "46.8% [" in text and ", seed 1 collapsed |" in text and "Flagged cells are **kept** in every mean" in text
    assert "Collapsed cells (1 of 4; kept in the means above):\n- esnli/finetune/small/f0.5-s1: one answer, " \
           "'neutral', for 100.0%" in text
    # what `grid status` lists: the same cell, for the same reasons
    cells = [Cell(*c) for c in grid.cells()]
    assert collapsed_cells(tmp_path / "results", cells) == {Cell("esnli", "finetune", "small", 0.5, 1):
                                                            tuple(flagged.reasons.iloc[0].split("; "))}


def test_a_cell_at_chance_is_flagged_though_its_answers_vary(tmp_path):
    from distill_step_by_step.report.collapse import check_cell
    from distill_step_by_step.report.intervals import Bootstrap
    from distill_step_by_step.report.reading import Answers

    correct = _first(70)  # 35%: within its interval of chance (33.3%) and of the majority rate (33.5%)
    rows = _answers(correct)
    check = check_cell("esnli", Answers([r["prediction"] for r in rows], [r["gold"] for r in rows]), correct,
                       Bootstrap(N))
    assert check.top_share < 0.4 and check.low < 1 / 3 < check.high and len(check.reasons) == 1
    assert check.reasons[0].endswith("not above chance (33.3%) or the majority class's rate (33.5%)")
    learned = _first(120)
    rows = _answers(learned)
    assert not check_cell("esnli", Answers([r["prediction"] for r in rows], [r["gold"] for r in rows]), learned,
                          Bootstrap(N)).collapsed


# ----- per-class results -----

HAND_GOLDS = ["entailment"] * 4 + ["neutral"] * 3 + ["contradiction"] * 3
# by hand: entailment -> 2 entailment, 1 neutral, 1 contradiction (capitalised: the lenient rule places it);
# neutral -> 1 neutral, 2 outside the labels; contradiction -> 1 entailment, 2 contradiction
HAND_PREDICTIONS = ["entailment", "entailment", "neutral", "Contradiction", "neutral", "maybe", None,
                    "contradiction", "contradiction", "entailment"]


def test_a_confusion_matrix_and_recalls_match_the_predictions_counted_by_hand():
    from distill_step_by_step.report.classes import class_labels, confusion, recalls
    from distill_step_by_step.report.reading import Answers

    assert class_labels("esnli") == class_labels("anli1") == NLI_LABELS
    assert class_labels("cqa") is None and class_labels("svamp") is None  # a choice is its text; an equation
    answers = Answers(HAND_PREDICTIONS, HAND_GOLDS)
    assert confusion(answers, NLI_LABELS).tolist() == [[2, 1, 1, 0], [0, 1, 0, 2], [1, 0, 2, 0]]
    assert recalls(answers, NLI_LABELS) == pytest.approx([2 / 4, 1 / 3, 2 / 3])


def test_the_report_writes_per_class_results_over_seeds_and_a_confusion_figure(tmp_path):
    """The report stage end to end on planted cells: per_class.csv summed over seeds as counted by hand, the
    recall table in results.md, the confusion figure, and the collapsed cell in results.csv."""
    import dataclasses

    import pandas as pd

    from conftest import REPO
    from distill_step_by_step.report.report import build_report
    from distill_step_by_step.settings import load_settings

    n = len(HAND_GOLDS)
    grid = GridConfig(["esnli"], ["finetune"], ["small"], [1.0], [0, 1])
    seeds = {0: HAND_PREDICTIONS, 1: list(HAND_GOLDS[:7]) + ["neutral"] * 3}  # seed 1: contradiction -> neutral
    for seed, predictions in seeds.items():
        rows = [{"id": f"e{i}", "prediction": p, "gold": g, "correct": p is not None and p.lower() == g,
                 "exact": p == g} for i, (p, g) in enumerate(zip(predictions, HAND_GOLDS))]
        _write_cell(tmp_path / "results" / "esnli" / "finetune" / "small" / f"f1.0-s{seed}",
                    np.array([r["correct"] for r in rows], np.float32), 10.0, 100, rows)
    teacher = [{"id": f"e{i}", "prediction": g, "gold": g, "correct": True, "exact": True}
               for i, g in enumerate(HAND_GOLDS)]
    write_jsonl(tmp_path / "reports" / "teacher" / "esnli.jsonl", teacher)
    write_json(tmp_path / "reports" / "baseline.json", {"esnli": {"accuracy": 1.0, "exact_accuracy": 1.0, "n": n,
                                                                  "exact_correct": n}})
    write_json(tmp_path / "reports" / "splits" / "esnli.json", {"test": n, "test_available": n, "valid": 5,
                                                                "pool_used": 100, "pool_available": 100})
    write_json(tmp_path / "reports" / "corpus" / "esnli.json", {})
    settings = dataclasses.replace(load_settings(REPO / "params.yaml"), grid=grid)
    build_report(settings, tmp_path / "results", tmp_path / "reports", tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "per_class.csv").set_index(["method", "gold"])
    student = table.loc["finetune"]
    # seed 0 as counted by hand, plus seed 1: entailment and neutral all right, contradiction all 'neutral'
    assert student[["as_entailment", "as_neutral", "as_contradiction", "as_other"]].values.tolist() == \
        [[2 + 4, 1, 1, 0], [0, 1 + 3, 0, 2], [1, 3, 2, 0]]
    assert student.n.tolist() == [8, 6, 6] and set(student.seeds) == {2}
    assert student.recall.tolist() == pytest.approx([(2 / 4 + 1) / 2, (1 / 3 + 1) / 2, (2 / 3 + 0) / 2], abs=1e-6)
    assert table.loc["teacher"].recall.tolist() == [1.0, 1.0, 1.0]
    text = (tmp_path / "out" / "results.md").read_text()
    assert "### Per-class recall" in text
    assert "| standard fine-tuning   | small     | 100%       | 2       | 75.0%" in text
    assert "![confusion matrices](plots/esnli_confusion.png)" in text
    figure = tmp_path / "out" / "plots" / "esnli_confusion.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    cells = pd.read_csv(tmp_path / "out" / "results.csv")
    assert cells.collapsed.tolist() == [True, True]  # 10 examples: neither seed's interval clears chance


@pytest.mark.slow
def test_the_readme_per_class_commands_on_a_fresh_clone_show_the_collapsed_cells_and_the_recall_table(tmp_path):
    """The README's block as a user copies it: `grid status smoke` ends with the smoke grid's collapsed cells (its
    cells come from the repository's store), and the demo's report has its per-class recall table."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO, copy_project

    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- test: per-class -->\s*```bash\n(.*?)```", readme, re.S).group(1)
    repo = copy_project(tmp_path, committed_grids=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "collapsed (12 of 12 finished; kept in the report's means, reports/smoke/results.md lists them):" \
        in proc.stdout
    assert "  anli1/finetune/tiny-t5/f1.0-s0: one answer, 'contradiction', for 100.0% of the test examples" in proc.stdout
    assert "| distilling step-by-step | minilm-l6-d1 | 100%       | 1       |" in proc.stdout


def test_methods_with_different_seeds_finished_are_compared_on_the_seeds_both_have(tmp_path):
    """A grid being built: step-by-step has seeds 0 and 1, fine-tuning 0, 1 and 2. The paired comparison uses
    seeds 0 and 1 of each (seed 2 of fine-tuning, far better here, does not enter it)."""
    grid = GridConfig(["esnli"], ["finetune", "step_by_step"], ["small"], [1.0], [0, 1, 2])
    res = _grid(tmp_path, lambda m, s, f, seed: _first(190 if (m, seed) == ("finetune", 2) else
                                                       120 + 10 * seed + (20 if m == "step_by_step" else 0)), grid=grid)
    res.cells = res.cells[~((res.cells.method == "step_by_step") & (res.cells.seed == 2))]
    res.correct = {k: v for k, v in res.correct.items() if not (k[1] == "step_by_step" and k[4] == 2)}
    comps = comparison_table(res, grid)
    row = comps[(comps.method == "step_by_step") & (comps.against == "finetune")].iloc[0]
    assert row.seeds == 2 and row.difference == pytest.approx(0.1)  # (130 + 140) / 2 - (120 + 130) / 2, of 200


def test_a_point_with_one_seed_is_compared_on_that_seed_alone(tmp_path):
    """Fine-tuning has seed 1 only, step-by-step 0, 1 and 2: the comparison pairs seed 1 with seed 1 (the
    others of step-by-step, far better here, do not enter it), and a point sharing no seed is not compared."""
    grid = GridConfig(["esnli"], ["finetune", "step_by_step"], ["small", "big"], [1.0], [0, 1, 2])
    res = _grid(tmp_path, lambda m, s, f, seed: _first(120 + (20 if m == "step_by_step" else 0)
                                                       + (50 if (m, seed) != ("step_by_step", 1) else 0)), grid=grid)
    # small: fine-tuning seed 1 only; big: fine-tuning seed 2 only and step-by-step seeds 0 and 1
    drop = {("finetune", "small", 0), ("finetune", "small", 2), ("finetune", "big", 0), ("finetune", "big", 1),
            ("step_by_step", "big", 2)}
    res.cells = res.cells[[(c.method, c.student, c.seed) not in drop for c in res.cells.itertuples()]]
    res.correct = {k: v for k, v in res.correct.items() if (k[1], k[2], k[4]) not in drop}
    comps = comparison_table(res, grid)
    pairs = comps[(comps.method == "step_by_step") & (comps.against == "finetune")]
    assert pairs.student.tolist() == ["small"]
    row = pairs.iloc[0]
    assert row.seeds == 1 and row.difference == pytest.approx((140 - 170) / N)  # seed 1 with seed 1


def test_the_readme_headline_tables_are_what_grid_headline_prints_from_the_committed_reports():
    """Each ``<!-- headline: <profile> <dataset> <student> -->`` block of the README is, markers included, what
    ``python -m distill_step_by_step.grid headline <profile>`` prints from the committed ``reports/<profile>/``."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"(<!-- headline: (\S+) \S+ \S+ -->\n.*?\n<!-- /headline -->)", text, re.S)
    assert blocks, "the README has no headline table"
    for block, profile in blocks:
        printed = subprocess.run([sys.executable, "-m", "distill_step_by_step.grid", "headline", profile], cwd=REPO,
                                 capture_output=True, text=True, check=True).stdout
        assert block in printed, f"the README's headline table is not what `grid headline {profile}` prints:\n{printed}"
    assert "| 12.5% (1,168) | " in text and "(b) step-by-step - fine-tuning with 100%" in text
