"""The ``report`` stage: every grid cell and the teacher as tables, paired comparisons with intervals, verdicts
on the paper's claims, the Markdown report, DVC's metrics and plot data, and the plots (``plots.py``).

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

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.scoring import RULES
from ..jsonio import atomic_open, read_json, write_json
from ..settings import GridConfig, Settings, TeacherConfig
from .intervals import Bootstrap, Interval
from .plots import plot_by_fraction, plot_by_size, plot_curves
from .presentation import dataset_title, method_look, pct
from .reading import TEACHER, Curve, GridResults, collect, collect_curves

SBS = "step_by_step"
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
            lines.append(f"  - {method_look(method).title}: none; closest: {best.student} at {pct(best.fraction)}, {_iv(best).points()}")
        else:
            r = ok.iloc[0]
            lines.append(f"  - {method_look(method).title}: {r.student} ({r.params_m:g}M) at {pct(r.fraction)}: {r.verdict}, "
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
            rows.append([method_look(method).title, student, f"{size.iloc[0]:g}" if len(size) else "?", *texts])
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


def _curve_lines(curves: list[Curve], dataset: str) -> list[str]:
    """Whether training had flattened: validation accuracy gained over the last quarter of the steps."""
    if not curves:
        return []
    steep = max(curves, key=lambda c: c.late_gain())
    rising = [c for c in curves if c.late_gain() > 0.01]
    return [f"Validation curves (mean over seeds): over the last quarter of training, the best validation "
            f"accuracy rose by at most "
            f"{100 * steep.late_gain():+.1f} points ({method_look(steep.method).title}, {steep.student}, "
            f"{pct(steep.fraction)} of the data); {len(rising)} of {len(curves)} (method, student, fraction) points "
            "still gained more than 1 point, so "
            + ("those were still learning when training stopped." if rising else "every curve had flattened."), "",
            f"![validation accuracy during training](plots/{dataset}_valid_curves.png)", ""]


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
