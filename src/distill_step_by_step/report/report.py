"""The ``report`` stage: every grid cell and the teacher as tables, paired comparisons with intervals, verdicts
on the paper's claims, and plots.

Everything here is read from files other stages wrote (``<results>/<cell>/``: ``metrics.json``,
``predictions.jsonl`` and ``valid_curve.json`` from ``train_score``; ``<reports>/baseline.json`` and
``<reports>/teacher/`` from ``baseline``; ``<reports>/corpus/`` from ``annotate``; ``<reports>/splits/`` from
``split``), so every number traces to the stage that made it and the report rebuilds without training.
A grid its workers have not finished is reported as far as it goes, its missing cells named.

Tables are pandas DataFrames: ``cells`` (one row per finished cell), ``points`` (one row per method at a
(dataset, student, fraction) point: mean over seeds, its 95% interval) and ``comparisons`` (one row per
paired comparison: difference, interval, verdict). Intervals and verdicts come from :mod:`.intervals`.
Accuracies are given under both scoring rules of :mod:`..data.scoring`: ``lenient`` (the headline, and what the
intervals are of) and ``exact`` (the authors' rule, to compare with the paper).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.datasets import get_spec
from ..data.scoring import RULES
from ..errors import DataError
from ..jsonio import atomic_open, read_json, read_jsonl, write_json
from ..settings import GridConfig, Settings, TeacherConfig
from ..train.cell import CURVE_FILE, METRICS_FILE, PREDICTIONS_FILE, Cell
from .intervals import Bootstrap, Interval
from .presentation import dataset_title, method_look

SBS = "step_by_step"
TEACHER = "teacher"  # the `against` of a comparison with the teacher
CELL_COLUMNS = ["dataset", "method", "student", "params_m", "fraction", "n_train", "seed", "accuracy", "exact_accuracy",
                "n_test"]
# From the paper's abstract (Hsieh et al., 2023), quoted, not re-measured: the exact per-cell figures are
# plotted in the paper's figures and are not transcribed here.
PAPER_CLAIMS = (
    "Distilling step-by-step with a 770M T5 outperforms few-shot prompted PaLM 540B using only 80% of the "
    "available data on a benchmark, whereas standard fine-tuning of the same T5 struggles to match it even "
    "with 100% of the data.",
    "Compared with both standard fine-tuning and standard distillation, it reaches better accuracy with far "
    "fewer labeled / unlabeled training examples, and beats few-shot LLMs with substantially smaller models.",
)


# What the paper found for each claim, to set our verdicts beside (Hsieh et al., 2023, section 4; a dataset
# without an entry gets the general statement).
PAPER_FINDING = {
    "a": "the paper finds step-by-step ahead of standard fine-tuning and of standard distillation at every "
         "training size and student size, on every dataset",
    "b": {"esnli": ("the paper finds step-by-step with 12.5% of e-SNLI ahead of standard fine-tuning with all of it", 0.125),
          None: ("the paper finds step-by-step reaching standard fine-tuning's full-data accuracy with a fraction of "
                 "the data on every dataset", None)},
    "c": "the paper finds step-by-step students (220M-770M T5) ahead of few-shot PaLM 540B with far less data "
         "than standard fine-tuning needs, or where it never gets there",
}


def pct(fraction: float | str) -> str:
    """A data fraction as a percentage: 0.125 -> '12.5%'."""
    return f"{100 * float(fraction):.4g}%"


def _title(method: str) -> str:
    return method_look(method).title


# ----- reading -----

def grid_cells(grid: GridConfig) -> list[Cell]:
    return [Cell(d, m, s, str(f), seed) for d, m, s, f, seed in grid.cells()]


def missing_cells(results_root: str | Path, grid: GridConfig) -> list[Cell]:
    """The grid's cells that have no results yet."""
    return [c for c in grid_cells(grid) if not (c.results_dir(results_root) / METRICS_FILE).is_file()]


@dataclass
class GridResults:
    """What the report is made from: the finished cells, each one's per-example correctness, the teacher's."""

    cells: pd.DataFrame  # CELL_COLUMNS, one row per finished cell
    correct: dict[tuple[str, str, str, float, int], np.ndarray]  # (dataset, method, student, fraction, seed) -> 0/1
    teacher: pd.DataFrame  # dataset, accuracy, exact_accuracy, n_test: on the students' test examples
    teacher_correct: dict[str, np.ndarray]
    missing: list[Cell]


def collect(results_root: str | Path, reports_root: str | Path, grid: GridConfig) -> GridResults:
    """Read every finished cell of the grid and the teacher's answers on the same test examples."""
    rows, correct = [], {}
    for cell in grid_cells(grid):
        folder = cell.results_dir(results_root)
        if not (folder / METRICS_FILE).is_file():
            continue
        m = read_json(folder / METRICS_FILE)
        info = m.get("record", {})
        key = (cell.dataset, cell.method, cell.student, float(cell.fraction), int(cell.seed))
        rows.append({"dataset": cell.dataset, "method": cell.method, "student": cell.student,
                     "params_m": info.get("params_m"), "fraction": key[3], "n_train": info.get("n_train"),
                     "seed": key[4], "accuracy": m["accuracy"], "exact_accuracy": m.get("exact_accuracy"),
                     "n_test": m["n"]})
        correct[key] = _correct_of(folder / PREDICTIONS_FILE, m["n"])
    cells = pd.DataFrame(rows, columns=CELL_COLUMNS).astype({"n_train": "Int64", "seed": "Int64", "n_test": "Int64"})
    baseline = read_json(Path(reports_root) / "baseline.json")
    teacher, teacher_correct = [], {}
    for dataset in grid.datasets:
        if dataset not in baseline:
            raise DataError(f"no teacher baseline for {dataset!r}", path=str(Path(reports_root) / "baseline.json"),
                            hint="run `dvc repro baseline`")
        b = baseline[dataset]
        teacher.append({"dataset": dataset, "accuracy": b["accuracy"], "exact_accuracy": b.get("exact_accuracy"),
                        "n_test": b["n"]})
        teacher_correct[dataset] = _correct_of(Path(reports_root) / TEACHER / f"{dataset}.jsonl", b["n"])
    return GridResults(cells, correct, pd.DataFrame(teacher), teacher_correct, missing_cells(results_root, grid))


def _correct_of(path: Path, n: int) -> np.ndarray:
    rows = read_jsonl(path)
    if len(rows) != n:
        raise DataError(f"{len(rows)} predictions where the scores count {n}", path=str(path),
                        hint="the predictions and metrics come from different runs: run `dvc repro`")
    return np.array([bool(r["correct"]) for r in rows], dtype=np.float32)


# ----- the tables -----

def _seed_matrix(res: GridResults, dataset: str, method: str, student: str, fraction: float) -> np.ndarray | None:
    """(seeds, examples) 0/1 correctness of one method at one point, seeds in order; None without cells."""
    keys = sorted(k for k in res.correct if k[:4] == (dataset, method, student, fraction))
    return np.stack([res.correct[k] for k in keys]) if keys else None


def point_table(res: GridResults, grid: GridConfig) -> pd.DataFrame:
    """One row per (dataset, method, student, fraction) with results: mean over seeds (both rules), its
    interval, the seeds' sample standard deviation."""
    if res.cells.empty:
        return pd.DataFrame(columns=["dataset", "method", "student", "fraction", "params_m", "n_train", "seeds",
                                     "accuracy", "exact_accuracy", "seed_std", "low", "high", "n_test"])
    points = (res.cells.groupby(["dataset", "method", "student", "fraction"], sort=False)
              .agg(params_m=("params_m", "first"), n_train=("n_train", "first"), seeds=("seed", "count"),
                   accuracy=("accuracy", "mean"), exact_accuracy=("exact_accuracy", "mean"),
                   seed_std=("accuracy", "std"), n_test=("n_test", "first"))
              .reset_index())
    boot = _bootstraps(res)
    bounds = [boot[p.dataset].accuracy(_seed_matrix(res, p.dataset, p.method, p.student, p.fraction))
              for p in points.itertuples()]
    points["low"] = [b.low for b in bounds]
    points["high"] = [b.high for b in bounds]
    return points


def _bootstraps(res: GridResults) -> dict[str, Bootstrap]:
    return {row.dataset: Bootstrap(int(row.n_test)) for row in res.teacher.itertuples()}


def comparison_table(res: GridResults, grid: GridConfig) -> pd.DataFrame:
    """One row per paired comparison at each (dataset, student, fraction) point: step-by-step against each
    rival method, and every method against the teacher; and, for claim (b), step-by-step at each fraction
    against fine-tuning at the largest one."""
    boot, rows = _bootstraps(res), []
    largest = max(float(f) for f in grid.fractions)

    def add(dataset: str, student: str, fraction: float, method: str, against: str, a: np.ndarray | None,
            b: np.ndarray | None, against_fraction: float | None = None) -> None:
        if a is None or b is None:
            return
        iv = boot[dataset].difference(a, b)
        rows.append({"dataset": dataset, "student": student, "fraction": fraction, "method": method,
                     "against": against, "against_fraction": against_fraction if against_fraction is not None
                     else (fraction if against != TEACHER else None),
                     "difference": iv.estimate, "low": iv.low, "high": iv.high, "verdict": iv.verdict(),
                     "seeds": iv.seeds, "test_examples": iv.examples})

    for dataset in grid.datasets:
        for student in grid.students:
            for fraction in (float(f) for f in grid.fractions):
                sbs = _seed_matrix(res, dataset, SBS, student, fraction)
                for rival in grid.methods:
                    if rival != SBS and method_look(rival).compared_as:
                        add(dataset, student, fraction, SBS, rival, sbs,
                            _seed_matrix(res, dataset, rival, student, fraction))
                for method in grid.methods:
                    add(dataset, student, fraction, method, TEACHER,
                        _seed_matrix(res, dataset, method, student, fraction), res.teacher_correct[dataset][None, :])
                if "finetune" in grid.methods and fraction != largest:
                    add(dataset, student, fraction, SBS, "finetune", sbs,
                        _seed_matrix(res, dataset, "finetune", student, largest), largest)
    columns = ["dataset", "student", "fraction", "method", "against", "against_fraction", "difference", "low", "high",
               "verdict", "seeds", "test_examples"]
    return pd.DataFrame(rows, columns=columns).astype({"seeds": "Int64", "test_examples": "Int64"})


def results_table(res: GridResults, points: pd.DataFrame) -> pd.DataFrame:
    """``results.csv``: one row per finished cell, with its point's mean and interval and the teacher's accuracy
    on the same test examples (typed columns; no marker rows)."""
    keys = ["dataset", "method", "student", "fraction"]
    table = res.cells.merge(points[keys + ["accuracy", "low", "high"]].rename(
        columns={"accuracy": "point_accuracy", "low": "point_low", "high": "point_high"}), on=keys, how="left")
    return table.merge(res.teacher[["dataset", "accuracy"]].rename(columns={"accuracy": "teacher_accuracy"}),
                       on="dataset", how="left")


# ----- DVC's view: a few numbers per point, and the plots' data -----

def plot_by_fraction_table(points: pd.DataFrame, res: GridResults, grid: GridConfig) -> pd.DataFrame:
    """``accuracy_by_fraction.csv``, DVC's plot of accuracy against the data fraction: one row per (dataset,
    series, fraction) in percent, a series being a method and a student (``sbs minilm-l6-d1``), with the
    point's 95% interval; the teacher is a series of its own, flat across the fractions."""
    rows = [{"dataset": p.dataset, "series": f"{_tag(p.method)} {p.student}", "fraction": 100 * float(p.fraction),
             "accuracy": 100 * float(p.accuracy), "low": 100 * float(p.low), "high": 100 * float(p.high)}
            for p in points.itertuples()]
    rows += [{"dataset": t.dataset, "series": TEACHER, "fraction": 100 * float(f), "accuracy": 100 * float(t.accuracy),
              "low": None, "high": None} for t in res.teacher.itertuples() for f in grid.fractions]
    return pd.DataFrame(rows, columns=["dataset", "series", "fraction", "accuracy", "low", "high"])


def plot_curves_table(curves: list[Curve]) -> pd.DataFrame:
    """``valid_curves.csv``, DVC's plot of the validation curves: one row per (dataset, series, step), the
    validation accuracy in percent (mean over seeds), a series being a method, a student and a fraction."""
    rows = [{"dataset": c.dataset, "series": f"{_tag(c.method)} {c.student} {pct(c.fraction)}", "step": step,
             "valid_accuracy": 100 * acc} for c in curves for step, acc in zip(c.steps, c.accuracies)]
    return pd.DataFrame(rows, columns=["dataset", "series", "step", "valid_accuracy"])


def fraction_key(fraction: float) -> str:
    """A fraction as a metric key without a dot (DVC joins nested keys with dots): 0.125 -> 'f12_5'."""
    return "f" + f"{100 * float(fraction):.4g}".replace(".", "_")


def summary_metrics(points: pd.DataFrame, comps: pd.DataFrame, res: GridResults) -> dict[str, Any]:
    """``summary.json``, the pipeline's DVC metrics: numbers a researcher compares across experiments, nested
    as dataset -> what -> student -> fraction, with the methods' short tags so that ``dvc exp show`` columns
    stay narrow (``demo.esnli.sbs-ft.minilm-l6-d1.f100``). Test accuracy in percent (mean over seeds) per
    method (``ft``, ``kd``, ``sbs``) and the teacher's, and the paired differences step-by-step minus each
    rival and each method minus the teacher (``sbs-ft``, ``ft-teacher``), in points. Strings and counts stay
    in the report's files."""
    out: dict[str, Any] = {}
    for t in res.teacher.itertuples():
        out.setdefault(t.dataset, {})[TEACHER] = round(100 * float(t.accuracy), 2)
    for p in points.itertuples():
        out.setdefault(p.dataset, {}).setdefault(_tag(p.method), {}).setdefault(p.student, {})[
            fraction_key(p.fraction)] = round(100 * float(p.accuracy), 2)
    for c in comps[comps.against_fraction.isna() | (comps.against_fraction == comps.fraction)].itertuples():
        name = f"{_tag(c.method)}-{_tag(c.against)}"
        out.setdefault(c.dataset, {}).setdefault(name, {}).setdefault(c.student, {})[fraction_key(c.fraction)] = \
            round(100 * float(c.difference), 2)
    return out


def _tag(method: str) -> str:
    """A method's short name in the metrics (the teacher is ``teacher``)."""
    return method if method == TEACHER else method_look(method).tag


# ----- the claims -----

def _iv(row: Any) -> Interval:
    return Interval(row.difference, row.low, row.high, int(row.seeds), int(row.test_examples))


def claim_lines(comps: pd.DataFrame, points: pd.DataFrame, dataset: str, teacher_name: str) -> list[str]:
    """The paper's three claims for one dataset, each with a verdict from the intervals."""
    lines = []
    mine = comps[comps.dataset == dataset]
    equal = mine[(mine.method == SBS) & (mine.against != TEACHER) & (mine.against_fraction == mine.fraction)]
    for rival, group in equal.groupby("against", sort=False):
        counts = group.verdict.value_counts()
        lines.append(f"- (a) step-by-step against {method_look(rival).compared_as} at equal data, {len(group)} "
                     f"(student, fraction) points: ahead at {counts.get('ahead', 0)}, behind at "
                     f"{counts.get('behind', 0)}, cannot tell at {counts.get('cannot tell', 0)}.")
        lines += [f"  - {r.student} at {pct(r.fraction)}: {r.verdict}, {_iv(r).points()}" for r in group.itertuples()]
    reach = mine[(mine.method == SBS) & (mine.against == "finetune") & (mine.against_fraction != mine.fraction)]
    for student, group in points[(points.dataset == dataset)].groupby("student", sort=False):
        ft = group[group.method == "finetune"]
        if ft.empty or group[group.method == SBS].empty:
            continue
        largest = ft.fraction.max()
        candidates = pd.concat([reach[reach.student == student],
                                equal[(equal.student == student) & (equal.against == "finetune") &
                                      (equal.fraction == largest)]]).sort_values("fraction")
        first = next((r for r in candidates.itertuples() if r.verdict != "behind"), None)
        lines.append(f"- (b) {student}: the smallest fraction at which step-by-step is not behind fine-tuning with "
                     f"{pct(largest)} of the data: " + (f"{pct(first.fraction)} ({first.verdict}, {_iv(first).points()})"
                                                         if first else "none in this grid"))
    lines.append(f"- (c) the smallest student and fraction not behind the teacher ({teacher_name}) on the same test "
                 "examples:")
    vs_teacher = mine[mine.against == TEACHER].merge(points[["dataset", "method", "student", "fraction", "params_m"]],
                                                     on=["dataset", "method", "student", "fraction"])
    for method, group in vs_teacher.groupby("method", sort=False):
        ok = group[group.verdict != "behind"].sort_values(["params_m", "fraction"])
        if ok.empty:
            best = group.sort_values("difference").iloc[-1]
            lines.append(f"  - {_title(method)}: none; closest: {best.student} at {pct(best.fraction)}, {_iv(best).points()}")
        else:
            r = ok.iloc[0]
            lines.append(f"  - {_title(method)}: {r.student} ({r.params_m:g}M) at {pct(r.fraction)}: {r.verdict}, "
                         f"{_iv(r).points()}")
    return lines + agreement_lines(mine, points[points.dataset == dataset], dataset)


def agreement_lines(comps: pd.DataFrame, points: pd.DataFrame, dataset: str) -> list[str]:
    """One sentence per claim that sets this grid's verdicts beside what the paper found (``PAPER_FINDING``)."""
    lines = ["", "Against the paper:"]
    equal = comps[(comps.method == SBS) & (comps.against != TEACHER) & (comps.against_fraction == comps.fraction)]
    if not equal.empty:
        c = equal.verdict.value_counts()
        n, ahead, behind = len(equal), c.get("ahead", 0), c.get("behind", 0)
        word = ("agree" if ahead == n else f"agree at {ahead} and disagree at {behind}" if ahead and behind else
                "disagree" if behind else "agree in part (the rest cannot tell)" if ahead else "cannot tell yet")
        lines.append(f"- (a) {PAPER_FINDING['a']}; here step-by-step is ahead at {ahead} of {n} (point, rival) pairs, "
                     f"behind at {behind}, and the intervals cannot tell at {n - ahead - behind}: our numbers **{word}**.")
    finding, paper_fraction = PAPER_FINDING["b"].get(dataset, PAPER_FINDING["b"][None])
    reach = comps[(comps.method == SBS) & (comps.against == "finetune")]
    for student, group in reach.groupby("student", sort=False):
        largest = group.against_fraction.max()
        full = group[group.against_fraction == largest].sort_values("fraction")
        ok = full[(full.verdict == "ahead") & (full.fraction < largest)]
        if (full.fraction < largest).sum() == 0:
            lines.append(f"- (b) {finding}; here {student} has no step-by-step result with less than {pct(largest)} "
                         "of the data yet: our numbers **cannot tell yet**.")
            continue
        if ok.empty:
            lines.append(f"- (b) {finding}; here {student} with step-by-step is ahead of fine-tuning with "
                         f"{pct(largest)} at no smaller fraction: our numbers **do not show it**.")
            continue
        first = ok.fraction.min()
        word = "agree" if paper_fraction is None or first <= paper_fraction else "agree only with more data"
        lines.append(f"- (b) {finding}; here {student} with step-by-step is ahead of fine-tuning with {pct(largest)} "
                     f"from {pct(first)} of the data: our numbers **{word}**.")
    vs = comps[comps.against == TEACHER].merge(points[["method", "student", "fraction", "params_m"]],
                                               on=["method", "student", "fraction"])
    firsts = {m: g[g.verdict == "ahead"].sort_values(["params_m", "fraction"]).head(1)
              for m, g in vs.groupby("method", sort=False)}
    if SBS in firsts:
        sbs = firsts[SBS]
        if sbs.empty:
            lines.append(f"- (c) {PAPER_FINDING['c']}; here no step-by-step student is ahead of the teacher: our "
                         "numbers **do not show it**.")
        else:
            r, ft = sbs.iloc[0], firsts.get("finetune")
            if ft is None or ft.empty:
                other, word = "standard fine-tuning at no point", "agree"
            else:
                f = ft.iloc[0]
                other = f"standard fine-tuning first with {f.student} at {pct(f.fraction)}"
                mine_first, theirs = (r.params_m, r.fraction), (f.params_m, f.fraction)
                word = "agree" if mine_first < theirs else "agree in part" if mine_first == theirs else "disagree"
            lines.append(f"- (c) {PAPER_FINDING['c']}; here step-by-step is ahead of the teacher first with "
                         f"{r.student} ({r.params_m:g}M) at {pct(r.fraction)} of the data, {other}: our numbers "
                         f"**{word}**.")
    return lines


# ----- markdown -----

def _cell_text(p: Any, seeds: int) -> str:
    text = f"{p.accuracy:.1%} [{p.low:.1%}, {p.high:.1%}]"
    text += f" ({p.exact_accuracy:.1%})" if pd.notna(p.exact_accuracy) else ""
    return text + (f", {p.seeds} of {seeds} seeds" if p.seeds < seeds else "")


def accuracy_table(points: pd.DataFrame, res: GridResults, grid: GridConfig, dataset: str, teacher_name: str) -> str:
    """A dataset's table: a row per (method, student), a column per fraction, the teacher's row last."""
    mine = points[points.dataset == dataset].copy()
    fractions = [float(f) for f in grid.fractions]
    n_train = {f: next((int(v) for v in mine[mine.fraction == f].n_train if pd.notna(v)), None) for f in fractions}
    columns = [f"{pct(f)} (n={n_train[f] if n_train[f] is not None else '?'})" for f in fractions]
    mine["text"] = [_cell_text(p, len(grid.seeds)) for p in mine.itertuples()]
    wide = mine.pivot_table(index=["method", "student"], columns="fraction", values="text", aggfunc="first")
    rows = []
    for method in grid.methods:
        for student in grid.students:
            size = mine[(mine.method == method) & (mine.student == student)].params_m
            texts = [wide.loc[(method, student), f] if (method, student) in wide.index and f in wide.columns
                     and pd.notna(wide.loc[(method, student), f]) else "–" for f in fractions]
            rows.append([_title(method), student, f"{size.iloc[0]:g}" if len(size) else "?", *texts])
    t = res.teacher.set_index("dataset").loc[dataset]
    teacher_text = f"{t.accuracy:.1%}" + (f" ({t.exact_accuracy:.1%})" if pd.notna(t.exact_accuracy) else "")
    rows.append(["teacher (few-shot CoT)", teacher_name, "–", *[teacher_text] * len(fractions)])
    return pd.DataFrame(rows, columns=["method", "student", "params (M)", *columns]).to_markdown(index=False)


def _facts(dataset: str, context: dict[str, Any]) -> list[str]:
    facts = []
    if split := context.get("splits", {}).get(dataset):
        facts += [f"test examples: {split.get('test')} of {split.get('test_available')}",
                  f"validation: {split.get('valid')} (fixed; model selection only)",
                  f"training pool: {split.get('pool_used')} of {split.get('pool_available')}"]
    if note := context.get("notes", {}).get(dataset):
        facts.append(note)
    if teacher := context.get("baseline", {}).get(dataset):
        full = teacher.get("full_test", teacher)
        facts.append(f"teacher ({context.get('teacher_name', TEACHER)}) on the full official test set "
                     f"(n={full['n']}): {full['exact_accuracy']:.2%} exact ({full['exact_correct']}/{full['n']}, the "
                     f"authors' rule: compare this with the paper), {full['accuracy']:.2%} lenient; "
                     f"{full.get('unparsed', 0)} completion(s) unparsed")
    return facts


def markdown(res: GridResults, points: pd.DataFrame, comps: pd.DataFrame, grid: GridConfig, context: dict[str, Any],
             curves: list["Curve"] | None = None) -> str:
    """The human-readable report: accuracy tables with intervals, the teacher, verdicts on the paper's claims."""
    seeds = len(grid.seeds)
    name = context.get("teacher_name", TEACHER)
    lines = [
        "# Results", "",
        "Generated by the `report` stage from each cell's `metrics.json` and `predictions.jsonl` (stage "
        "`train_score`), `baseline.json` and `teacher/` (stage `baseline`), `corpus/*.json` (stage `annotate`) and "
        "`splits/*.json` (stage `split`). Do not edit by hand: run `dvc repro`.", "",
        f"Test accuracy, mean over {seeds} seed(s) ({', '.join(map(str, grid.seeds))}), then its 95% interval in "
        f"square brackets, then in round brackets the **exact** accuracy ({RULES['exact']}). The headline is the "
        f"**lenient** accuracy ({RULES['lenient']}). Intervals are percentile bootstraps over the test examples"
        + (" and the seeds" if seeds > 1 else " (one seed: they cover test-example sampling only, not "
                                               "seed-to-seed variation)")
        + "; comparisons are paired (the same resampled examples for both sides, seed s with seed s) and read "
          "**ahead** or **behind** when the whole interval is on one side of 0, else **cannot tell**. Checkpoints "
          "are selected on validation (lenient rule); test is scored once. `comparisons.csv` holds every comparison.",
        "",
    ]
    if res.missing:
        lines += [f"**{len(res.missing)} of {len(grid.cells())} cells of this grid have no results yet** (shown as –): "
                  + ", ".join(c.name for c in res.missing[:12]) + (", ..." if len(res.missing) > 12 else "") + ".", ""]
    for dataset in grid.datasets:
        lines += [f"## {dataset_title(dataset)}", "", *[f"- {f}" for f in _facts(dataset, context)], "",
                  accuracy_table(points, res, grid, dataset, name), "",
                  *claim_lines(comps, points, dataset, name), "",
                  f"![accuracy vs training fraction](plots/{dataset}_by_fraction.png)",
                  f"![accuracy vs student size](plots/{dataset}_by_size.png)", ""]
        if curves is not None:
            lines += _curve_lines([c for c in curves if c.dataset == dataset], dataset)
    lines += ["## The paper's findings (quoted from Hsieh et al., 2023, not measured here)", ""]
    lines += [f"- {claim}" for claim in PAPER_CLAIMS]
    lines += ["", "These were obtained with T5 v1.1 students (220M-11B) on GPUs/TPUs. Numbers in the tables above "
              "come only from this repository's stages.", ""]
    return "\n".join(lines)


# ----- validation curves -----

@dataclass
class Curve:
    """The validation curve of one (dataset, method, student, fraction), averaged over its seeds."""

    dataset: str
    method: str
    student: str
    fraction: float
    steps: list[int]
    accuracies: list[float]

    def late_gain(self) -> float:
        """How much the best validation accuracy (the checkpoint selection keeps) rose over the last quarter
        of training: zero once it has flattened. The best, not the last, so that one noisy dip before the
        last quarter does not count as a gain."""
        last = self.steps[-1]
        before = [a for s, a in zip(self.steps, self.accuracies) if s <= 0.75 * last] or self.accuracies[:1]
        return max(self.accuracies) - max(before)


def collect_curves(results_root: str | Path, grid: GridConfig) -> list[Curve]:
    """Every grid point's validation curve (mean over seeds at the steps all its seeds validated at)."""
    runs: dict[tuple[str, str, str, float], list[dict[int, float]]] = {}
    for cell in grid_cells(grid):
        path = cell.results_dir(results_root) / CURVE_FILE
        if path.is_file():
            key = (cell.dataset, cell.method, cell.student, float(cell.fraction))
            runs.setdefault(key, []).append({p["step"]: p["valid_accuracy"] for p in read_json(path)})
    curves = []
    for (dataset, method, student, fraction), seeds in runs.items():
        steps = sorted(set.intersection(*(set(s) for s in seeds)))
        if steps:
            curves.append(Curve(dataset, method, student, fraction, steps,
                                [statistics.fmean(s[step] for s in seeds) for step in steps]))
    return curves


def _curve_lines(curves: list[Curve], dataset: str) -> list[str]:
    """Whether training had flattened: validation accuracy gained over the last quarter of the steps."""
    if not curves:
        return []
    steep = max(curves, key=lambda c: c.late_gain())
    rising = [c for c in curves if c.late_gain() > 0.01]
    return [f"Validation curves (mean over seeds): over the last quarter of training, the best validation "
            f"accuracy rose by at most "
            f"{100 * steep.late_gain():+.1f} points ({_title(steep.method)}, {steep.student}, "
            f"{pct(steep.fraction)} of the data); {len(rising)} of {len(curves)} (method, student, fraction) points "
            "still gained more than 1 point, so "
            + ("those were still learning when training stopped." if rising else "every curve had flattened."), "",
            f"![validation accuracy during training](plots/{dataset}_valid_curves.png)", ""]


# ----- plots -----

def _axes_style(ax: Any, dataset: str, teacher: float | None, teacher_name: str) -> None:
    """Teacher line, chance line, a 0-100% axis with percentages, light grid."""
    import matplotlib.ticker

    if teacher is not None:
        ax.axhline(teacher, color="black", linestyle="--", linewidth=1.2, label=f"{teacher_name} (teacher, few-shot CoT)")
    if (chance := get_spec(dataset).chance) is not None:
        ax.axhline(chance, color="gray", linestyle=":", linewidth=1.2, label="chance")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.minorticks_off()
    ax.grid(alpha=0.3)


def _interval_note(grid: GridConfig) -> str:
    return ("\nmean over seeds; bands: 95% intervals over test examples and seeds" if len(grid.seeds) > 1 else
            "\n1 seed; bands: 95% intervals over test examples only")


def plot_by_fraction(points: pd.DataFrame, grid: GridConfig, dataset: str, teacher: float, teacher_name: str,
                     path: Path) -> Path:
    """Accuracy vs training fraction, a panel per student, each method's 95% interval shaded."""
    import matplotlib.pyplot as plt

    students = list(points.sort_values("params_m").student.unique()) or list(grid.students[:1])
    fig, axes = plt.subplots(1, len(students), figsize=(5.2 * len(students), 4.6), sharey=True, squeeze=False)
    fractions = sorted(points.fraction.unique())
    for ax, student in zip(axes[0], students):
        for method in grid.methods:
            ps = points[(points.student == student) & (points.method == method)].sort_values("fraction")
            if ps.empty:
                continue
            color, marker = method_look(method).color, method_look(method).marker
            ax.plot(ps.fraction, ps.accuracy, marker=marker, color=color, label=_title(method))
            ax.fill_between(ps.fraction, ps.low, ps.high, color=color, alpha=0.15, linewidth=0)
        _axes_style(ax, dataset, teacher, teacher_name)
        ax.set_xscale("log", base=2)
        if fractions:
            n = {f: points[points.fraction == f].n_train.iloc[0] for f in fractions}
            ax.set_xticks(fractions, [f"{pct(f)}\n(n={n[f]})" for f in fractions])
        size = points[points.student == student].params_m
        ax.set_title(f"{student} ({size.iloc[0]:g}M params)" if len(size) else student)
        ax.set_xlabel("training examples (fraction of the pool)")
    axes[0][0].set_ylabel("test accuracy (lenient)")
    _legend_below(fig, axes[0][0])
    fig.suptitle(f"{dataset_title(dataset)}: accuracy vs amount of training data" + _interval_note(grid))
    return _save(fig, path)


def plot_by_size(points: pd.DataFrame, grid: GridConfig, dataset: str, teacher: float, teacher_name: str,
                 path: Path) -> Path:
    """Accuracy vs student size at the largest fraction, error bars: 95% intervals."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    largest = points.fraction.max() if not points.empty else max(grid.fractions)
    at = points[points.fraction == largest]
    for method in grid.methods:
        ps = at[at.method == method].sort_values("params_m")
        if not ps.empty:
            color, marker = method_look(method).color, method_look(method).marker
            ax.errorbar(ps.params_m, ps.accuracy, yerr=[ps.accuracy - ps.low, ps.high - ps.accuracy], marker=marker,
                        color=color, capsize=3, label=_title(method))
    _axes_style(ax, dataset, teacher, teacher_name)
    ax.set_xscale("log")
    sizes = sorted(at.params_m.unique())
    if sizes:
        ax.set_xticks(sizes, [f"{s:g}M\n{at[at.params_m == s].student.iloc[0]}" for s in sizes])
    ax.minorticks_off()  # a log axis over a narrow range would label its minor ticks over the students' names
    ax.margins(x=0.08)
    ax.set_xlabel("student size (parameters)")
    ax.set_ylabel("test accuracy (lenient)")
    ax.set_title(f"{dataset_title(dataset)}: accuracy vs student size ({pct(largest)} of the data)"
                 + _interval_note(grid), fontsize=10)
    _legend_below(fig, ax)
    return _save(fig, path)


def plot_curves(curves: list[Curve], grid: GridConfig, dataset: str, path: Path) -> Path:
    """Validation accuracy vs training step, a panel per student: the largest fraction solid, the smallest dashed."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    students = [s for s in grid.students if any(c.student == s for c in curves)] or list(grid.students[:1])
    fig, axes = plt.subplots(1, len(students), figsize=(5.2 * len(students), 4.6), sharey=True, squeeze=False)
    shown = sorted({min(c.fraction for c in curves), max(c.fraction for c in curves)}, reverse=True) if curves else []
    for ax, student in zip(axes[0], students):
        for method in grid.methods:
            color, marker = method_look(method).color, method_look(method).marker
            for fraction, style in zip(shown, ("-", "--")):
                c = next((c for c in curves if (c.student, c.method, c.fraction) == (student, method, fraction)), None)
                if c:
                    ax.plot(c.steps, c.accuracies, style, marker=marker, markersize=3, color=color,
                            label=f"{_title(method)}, {pct(fraction)} of the data")
        if (chance := get_spec(dataset).chance) is not None:
            ax.axhline(chance, color="gray", linestyle=":", linewidth=1.2, label="chance")
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.set_title(student)
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("validation accuracy (lenient)")
    _legend_below(fig, axes[0][0])
    fig.suptitle(f"{dataset_title(dataset)}: validation accuracy during training (mean over seeds)")
    return _save(fig, path)


def _legend_below(fig: Any, ax: Any) -> None:
    # Below the axes, so no point near chance level or the teacher line is hidden.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize=8, frameon=False)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: the bytes depend on the data only
    plt.close(fig)
    return path


# ----- the stage -----

def teacher_name(teacher: TeacherConfig) -> str:
    """How reports name the teacher: the recorded PaLM, or the live teacher's model."""
    if teacher.name == "palm":
        return "PaLM 540B"
    block = getattr(teacher, teacher.name)
    return str(getattr(block, "model", None) or teacher.name)


def _csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_open(path) as fh:
        frame.to_csv(fh, index=False, lineterminator="\n", float_format="%.6g")


def build_report(settings: Settings, results_root: str | Path, reports_root: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write results.csv, comparisons.csv, results.md, summary.json (DVC's metrics), the plots and their data
    (DVC's plots) under ``out_dir``; returns a small summary."""
    import matplotlib

    matplotlib.use("Agg")
    grid, reports_root, out_dir = settings.grid, Path(reports_root), Path(out_dir)
    name = teacher_name(settings.teacher)
    res = collect(results_root, reports_root, grid)
    points, comps = point_table(res, grid), comparison_table(res, grid)
    _csv(results_table(res, points), out_dir / "results.csv")
    _csv(comps, out_dir / "comparisons.csv")
    context: dict[str, Any] = {"teacher_name": name, "baseline": read_json(reports_root / "baseline.json"),
                               "splits": {}, "notes": {}}
    for dataset in grid.datasets:
        context["splits"][dataset] = read_json(reports_root / "splits" / f"{dataset}.json")
        if "note" in (info := read_json(reports_root / "corpus" / f"{dataset}.json")):
            context["notes"][dataset] = info["note"]
    curves = collect_curves(results_root, grid)
    _csv(plot_by_fraction_table(points, res, grid), out_dir / "accuracy_by_fraction.csv")
    _csv(plot_curves_table(curves), out_dir / "valid_curves.csv")
    with atomic_open(out_dir / "results.md") as fh:
        fh.write(markdown(res, points, comps, grid, context, curves))
    # under the pipeline's name (results/<name>: demo, or the grid's), so that DVC's column names (which
    # it prefixes with the file's path when two files share a name) stay short and say which pipeline
    write_json(out_dir / "summary.json", {Path(results_root).name: summary_metrics(points, comps, res)})
    teacher, plots = res.teacher.set_index("dataset").accuracy, []
    for dataset in grid.datasets:
        mine = points[points.dataset == dataset]
        plots.append(plot_by_fraction(mine, grid, dataset, teacher[dataset], name, out_dir / "plots" / f"{dataset}_by_fraction.png"))
        plots.append(plot_by_size(mine, grid, dataset, teacher[dataset], name, out_dir / "plots" / f"{dataset}_by_size.png"))
        plots.append(plot_curves([c for c in curves if c.dataset == dataset], grid, dataset,
                                 out_dir / "plots" / f"{dataset}_valid_curves.png"))
    return {"cells": len(res.cells), "missing": len(res.missing), "comparisons": len(comps),
            "plots": [str(p) for p in plots]}
