"""The ``report`` stage: every grid cell and the teacher as tables, paired comparisons with intervals, verdicts
on the paper's claims, the Markdown report, DVC's metrics and plot data, and the plots (``plots.py``). The
Markdown's layout and prose are a Jinja2 template (``templates/results.md.j2``); this module gives it the
numbers, already formatted, the verdicts and the tables (pandas).

Everything here is read from files other stages wrote (``<results>/<cell>/``: ``metrics.json``,
``predictions.jsonl`` and ``valid_curve.json`` from ``train_score``; ``<reports>/baseline.json`` and
``<reports>/teacher/`` from ``baseline``; ``<reports>/corpus/`` from ``annotate``; ``<reports>/splits/`` from
``split``), so every number traces to the stage that made it and the report rebuilds without training.
A grid its workers have not finished is reported as far as it goes, its missing cells named.

Tables are pandas DataFrames: ``cells`` (one row per finished cell), ``points`` (one row per method at a
(dataset, student, fraction) point: mean over seeds, its 95% interval), ``comparisons`` (one row per
paired comparison: difference, interval, verdict) and the collapse checks (one row per cell: :mod:`.collapse`).
Intervals and verdicts come from :mod:`.intervals`; per-class results (label-set datasets) from :mod:`.classes`.
Accuracies are given under both scoring rules of :mod:`..data.scoring`: ``lenient`` (the headline, and what the
intervals are of) and ``exact`` (the authors' rule, to compare with the paper).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from ..data.scoring import RULES
from ..jsonio import atomic_open, read_json, write_json
from ..settings import GridConfig, Settings, TeacherConfig
from ..train.cell import Cell
from .classes import ClassResult, class_labels, class_results, per_class_table, recall_markdown
from .collapse import ONE_ANSWER, collapse_table
from .intervals import Bootstrap, Interval
from .plots import plot_by_fraction, plot_by_size, plot_confusions, plot_curves
from .presentation import dataset_title, method_look, pct
from .reading import TEACHER, Curve, GridResults, collect, collect_curves

SBS = "step_by_step"
# The Markdown's layout and fixed prose (the paper's findings among them), beside this module; it ships as
# package data. tests/stage_deps.py reads PACKAGE_DATA to make it a dep of every stage that imports this module.
PACKAGE_DATA = ("templates/results.md.j2",)
# The smallest training fraction at which the paper finds step-by-step ahead of standard fine-tuning with all
# of the data (Hsieh et al., 2023, section 4), which our claim (b) is set beside; a dataset without an entry is
# set beside the general statement.
PAPER_FRACTION = {"esnli": 0.125}
STILL_LEARNING = 0.01  # a validation curve that gained more than this over its last quarter had not flattened
PER_CLASS_FILE = "per_class.csv"


def _seed_matrix(res: GridResults, dataset: str, method: str, student: str, fraction: float,
                 seeds: set[int] | None = None) -> np.ndarray | None:
    """(seeds, examples) 0/1 correctness of one method at one point, seeds in order (only ``seeds`` when
    given); None without cells."""
    keys = sorted(k for k in res.correct if k[:4] == (dataset, method, student, fraction)
                  and (seeds is None or k[4] in seeds))
    return np.stack([res.correct[k] for k in keys]) if keys else None


def _largest_fraction(res: GridResults, dataset: str, method: str, student: str) -> float | None:
    """The largest fraction at which ``method`` has results for ``student`` (None without any)."""
    return max((k[3] for k in res.correct if k[:3] == (dataset, method, student)), default=None)


def _paired(res: GridResults, dataset: str, a: tuple[str, str, float], b: tuple[str, str, float]
            ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Two points' seed matrices for a paired comparison, seed s with seed s. Where they have not finished the
    same seeds (a grid still being built), the seeds both have, even one alone: one seed against the mean of
    three would count the three's seed-to-seed variation and not the one's, and read as a three-seed
    comparison. None where they share no seed."""
    def seeds(point: tuple[str, str, float]) -> set[int]:
        return {k[4] for k in res.correct if k[:4] == (dataset, *point)}

    sa, sb = seeds(a), seeds(b)
    common = sa & sb if sa != sb else None
    if common is not None and not common:
        return None, None
    return _seed_matrix(res, dataset, *a, seeds=common), _seed_matrix(res, dataset, *b, seeds=common)


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


def comparison_table(res: GridResults, grid: GridConfig, bases: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per paired comparison at each (dataset, student, fraction) point: step-by-step against each
    rival method, each variant (``bases``: its method) against fine-tuning and against its method, and every
    method and variant against the teacher; and, for claim (b), step-by-step at each fraction against
    fine-tuning at the largest fraction it has results for (the grid's largest once the grid is complete)."""
    bases = bases or {}
    boot, rows = _bootstraps(res), []

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
            top = _largest_fraction(res, dataset, "finetune", student)  # claim (b)'s fine-tuning
            for fraction in grid.fractions:
                for rival in grid.methods:
                    if rival != SBS and method_look(rival).compared_as:
                        add(dataset, student, fraction, SBS, rival,
                            *_paired(res, dataset, (SBS, student, fraction), (rival, student, fraction)))
                for variant in grid.variants:
                    for rival in dict.fromkeys(["finetune", bases.get(variant)]):
                        if rival in grid.methods:
                            add(dataset, student, fraction, variant, rival,
                                *_paired(res, dataset, (variant, student, fraction), (rival, student, fraction)))
                for method in grid.all_methods:
                    add(dataset, student, fraction, method, TEACHER,
                        _seed_matrix(res, dataset, method, student, fraction), res.teacher_correct[dataset][None, :])
                if "finetune" in grid.methods and top is not None and fraction < top:
                    add(dataset, student, fraction, SBS, "finetune",
                        *_paired(res, dataset, (SBS, student, fraction), ("finetune", student, top)), top)
    columns = ["dataset", "student", "fraction", "method", "against", "against_fraction", "difference", "low", "high",
               "verdict", "seeds", "test_examples"]
    return pd.DataFrame(rows, columns=columns).astype({"seeds": "Int64", "test_examples": "Int64"})


def results_table(res: GridResults, points: pd.DataFrame, flags: pd.DataFrame | None = None) -> pd.DataFrame:
    """``results.csv``: one row per finished cell, with its point's mean and interval, the teacher's accuracy
    on the same test examples, and whether the cell is ``collapsed`` and why (``collapse_reasons``; typed
    columns, no marker rows)."""
    keys = ["dataset", "method", "student", "fraction"]
    table = res.cells.merge(points[keys + ["accuracy", "low", "high"]].rename(
        columns={"accuracy": "point_accuracy", "low": "point_low", "high": "point_high"}), on=keys, how="left")
    table = table.merge(res.teacher[["dataset", "accuracy"]].rename(columns={"accuracy": "teacher_accuracy"}),
                        on="dataset", how="left")
    flags = collapse_table(res, _bootstraps(res)) if flags is None else flags
    table = table.merge(flags[keys + ["seed", "collapsed", "reasons"]].rename(columns={"reasons": "collapse_reasons"}),
                        on=keys + ["seed"], how="left")
    return table.astype({"collapsed": bool})


# ----- DVC's view: a few numbers per point, and the plots' data -----

def plot_by_fraction_table(points: pd.DataFrame, res: GridResults, grid: GridConfig) -> pd.DataFrame:
    """``accuracy_by_fraction.csv``, DVC's plot of accuracy against the data fraction: one row per (dataset,
    series, fraction) in percent, a series being a method and a student (``sbs minilm-l6-d1``), with the
    point's 95% interval; the teacher is a series of its own, flat across the fractions."""
    rows = [{"dataset": p.dataset, "series": f"{_tag(p.method)} {p.student}", "fraction": 100 * p.fraction,
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


def summary_metrics(points: pd.DataFrame, comps: pd.DataFrame, res: GridResults,
                    flags: pd.DataFrame | None = None) -> dict[str, Any]:
    """``summary.json``, the pipeline's DVC metrics: numbers a researcher compares across experiments, nested
    as dataset -> what -> student -> fraction, with the methods' short tags so that ``dvc exp show`` columns
    stay narrow (``demo.esnli.sbs-ft.minilm-l6-d1.f100``). Test accuracy in percent (mean over seeds) per
    method (``ft``, ``kd``, ``sbs``) and the teacher's, and the paired differences step-by-step minus each
    rival and each method minus the teacher (``sbs-ft``, ``ft-teacher``), in points, and the number of
    collapsed cells (``collapsed``: :mod:`.collapse`). Strings and other counts stay in the report's files."""
    out: dict[str, Any] = {}
    for t in res.teacher.itertuples():
        out.setdefault(t.dataset, {})[TEACHER] = round(100 * float(t.accuracy), 2)
        if flags is not None:
            out[t.dataset]["collapsed"] = int(flags[flags.dataset == t.dataset].collapsed.sum())
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


# ----- the claims: verdicts and counts, which the template words -----

def _iv(row: Any) -> Interval:
    return Interval(row.difference, row.low, row.high, int(row.seeds), int(row.test_examples))


def _verdict(row: Any) -> dict[str, str]:
    """A comparison at one point, as the template shows it."""
    return {"student": row.student, "fraction": pct(row.fraction), "verdict": row.verdict,
            "interval": _iv(row).points()}


def _equal_data(comps: pd.DataFrame) -> pd.DataFrame:
    """Step-by-step against each rival method at the same fraction."""
    return comps[(comps.method == SBS) & (comps.against != TEACHER) & (comps.against_fraction == comps.fraction)]


def claims(comps: pd.DataFrame, points: pd.DataFrame, dataset: str) -> dict[str, list[dict[str, Any]]]:
    """The paper's three claims for one dataset, each with verdicts from the intervals: (a) per rival, the
    verdict counts and each point's verdict; (b) per student; (c) per method."""
    mine = comps[comps.dataset == dataset]
    equal, claim_a = _equal_data(mine), []
    for rival, group in equal.groupby("against", sort=False):
        counts = group.verdict.value_counts()
        claim_a.append({"rival": method_look(rival).compared_as, "n": len(group), "ahead": counts.get("ahead", 0),
                        "behind": counts.get("behind", 0), "cannot_tell": counts.get("cannot tell", 0),
                        "points": [_verdict(r) for r in group.itertuples()]})
    return {"a": claim_a, "b": _claim_b(mine, equal, points[points.dataset == dataset]), "c": _claim_c(mine, points)}


def _claim_b(mine: pd.DataFrame, equal: pd.DataFrame, points: pd.DataFrame) -> list[dict[str, Any]]:
    """Per student: the smallest fraction at which step-by-step is not behind fine-tuning with the most data
    (``first`` None where there is none, ``closest`` then the comparison nearest to it)."""
    reach = mine[(mine.method == SBS) & (mine.against == "finetune") & (mine.against_fraction != mine.fraction)]
    out = []
    for student, group in points.groupby("student", sort=False):
        ft = group[group.method == "finetune"]
        if ft.empty or group[group.method == SBS].empty:
            continue
        largest = ft.fraction.max()
        candidates = pd.concat([reach[reach.student == student],
                                equal[(equal.student == student) & (equal.against == "finetune") &
                                      (equal.fraction == largest)]]).sort_values("fraction")
        first = next((r for r in candidates.itertuples() if r.verdict != "behind"), None)
        closest = None if first or candidates.empty else candidates.sort_values("difference").iloc[-1]
        out.append({"student": student, "largest": pct(largest), "first": _verdict(first) if first else None,
                    "closest": _verdict(closest) if closest is not None else None})
    return out


def _claim_c(mine: pd.DataFrame, points: pd.DataFrame) -> list[dict[str, Any]]:
    """Per method: the smallest student and fraction not behind the teacher (``found``), else the closest."""
    vs_teacher = mine[mine.against == TEACHER].merge(points[["dataset", "method", "student", "fraction", "params_m"]],
                                                     on=["dataset", "method", "student", "fraction"])
    out = []
    for method, group in vs_teacher.groupby("method", sort=False):
        ok = group[group.verdict != "behind"].sort_values(["params_m", "fraction"])
        row = group.sort_values("difference").iloc[-1] if ok.empty else ok.iloc[0]
        out.append({"method": method_look(method).title, "found": not ok.empty, "params": f"{row.params_m:g}",
                    **_verdict(row)})
    return out


def agreement(comps: pd.DataFrame, points: pd.DataFrame, dataset: str, largest: float) -> dict[str, Any]:
    """This grid's verdicts set beside what the paper found, claim by claim (one dataset's comparisons and
    points; ``largest``: the grid's largest fraction): the counts and a plain word (**agree**, **disagree**,
    ...) for the template's sentences."""
    paper_fraction = PAPER_FRACTION.get(dataset)
    return {"paper_fraction": pct(paper_fraction) if paper_fraction is not None else None,
            "a": _agree_a(comps), "b": _agree_b(comps, paper_fraction, largest), "c": _agree_c(comps, points)}


def _agree_a(comps: pd.DataFrame) -> dict[str, Any] | None:
    equal = _equal_data(comps)
    if equal.empty:
        return None
    c = equal.verdict.value_counts()
    n, ahead, behind = len(equal), c.get("ahead", 0), c.get("behind", 0)
    word = ("agree" if ahead == n else f"agree at {ahead} and disagree at {behind}" if ahead and behind else
            "disagree" if behind else "agree in part (the rest cannot tell)" if ahead else "cannot tell yet")
    return {"n": n, "ahead": ahead, "behind": behind, "cannot_tell": n - ahead - behind, "word": word}


def _agree_b(comps: pd.DataFrame, paper_fraction: float | None, grid_largest: float) -> list[dict[str, Any]]:
    """Per student: from which smaller fraction (``first``) step-by-step is ahead of fine-tuning with the most
    data it has (``so_far`` while that is less than the grid's largest fraction), whether step-by-step has any
    result with less (``smaller``), and the word. Ahead of fine-tuning with less than all the data says nothing
    of fine-tuning with all of it (cannot tell yet); behind it already is behind."""
    reach = comps[(comps.method == SBS) & (comps.against == "finetune")]
    out = []
    for student, group in reach.groupby("student", sort=False):
        largest = group.against_fraction.max()
        full = group[group.against_fraction == largest].sort_values("fraction")
        ok = full[(full.verdict == "ahead") & (full.fraction < largest)]
        smaller = bool((full.fraction < largest).any())
        first = ok.fraction.min() if not ok.empty else None
        so_far = largest < grid_largest
        word = ("cannot tell yet" if not smaller else ("do not show it" + (" so far" if so_far else ""))
                if first is None else "cannot tell yet" if so_far else
                "agree" if paper_fraction is None or first <= paper_fraction else "agree only with more data")
        out.append({"student": student, "largest": pct(largest), "smaller": smaller, "so_far": so_far,
                    "first": pct(first) if first is not None else None, "word": word})
    return out


def _agree_c(comps: pd.DataFrame, points: pd.DataFrame) -> dict[str, Any] | None:
    """The smallest step-by-step student and fraction ahead of the teacher (``first``), fine-tuning's
    (``finetune``), and the word; None without step-by-step comparisons with the teacher."""
    vs = comps[comps.against == TEACHER].merge(points[["method", "student", "fraction", "params_m"]],
                                               on=["method", "student", "fraction"])
    firsts = {m: g[g.verdict == "ahead"].sort_values(["params_m", "fraction"]).head(1)
              for m, g in vs.groupby("method", sort=False)}
    if SBS not in firsts:
        return None
    if firsts[SBS].empty:
        return {"first": None, "finetune": None, "word": "do not show it"}
    r, ft = firsts[SBS].iloc[0], firsts.get("finetune")
    first = {"student": r.student, "params": f"{r.params_m:g}", "fraction": pct(r.fraction)}
    if ft is None or ft.empty:
        return {"first": first, "finetune": None, "word": "agree"}
    f = ft.iloc[0]
    mine_first, theirs = (r.params_m, r.fraction), (f.params_m, f.fraction)
    word = "agree" if mine_first < theirs else "agree in part" if mine_first == theirs else "disagree"
    return {"first": first, "finetune": {"student": f.student, "fraction": pct(f.fraction)}, "word": word}


# ----- markdown: the template's context -----

def _cell_text(p: Any, seeds: int, collapsed: list[int] | None = None) -> str:
    text = f"{p.accuracy:.1%} [{p.low:.1%}, {p.high:.1%}]"
    text += f" ({p.exact_accuracy:.1%})" if pd.notna(p.exact_accuracy) else ""
    text += f", {p.seeds} of {seeds} seeds" if p.seeds < seeds else ""
    if collapsed:  # kept in the mean, and said so where the mean is shown
        text += f", seed{'s' if len(collapsed) > 1 else ''} {', '.join(map(str, collapsed))} collapsed"
    return text


def _collapsed_seeds(flags: pd.DataFrame | None) -> dict[tuple[str, str, str, float], list[int]]:
    """The collapsed seeds of each (dataset, method, student, fraction)."""
    out: dict[tuple[str, str, str, float], list[int]] = {}
    for f in ([] if flags is None else flags[flags.collapsed].itertuples()):
        out.setdefault((f.dataset, f.method, f.student, f.fraction), []).append(int(f.seed))
    return out


def accuracy_table(points: pd.DataFrame, res: GridResults, grid: GridConfig, dataset: str, teacher_name: str,
                   flags: pd.DataFrame | None = None) -> str:
    """A dataset's table: a row per (method, student), a column per fraction, the teacher's row last; a point
    that holds collapsed cells names their seeds."""
    mine = points[points.dataset == dataset].copy()
    fractions = grid.fractions
    n_train = {f: next((int(v) for v in mine[mine.fraction == f].n_train if pd.notna(v)), None) for f in fractions}
    columns = [f"{pct(f)} (n={n_train[f] if n_train[f] is not None else '?'})" for f in fractions]
    collapsed = _collapsed_seeds(flags)
    mine["text"] = [_cell_text(p, len(grid.seeds), collapsed.get((p.dataset, p.method, p.student, p.fraction)))
                    for p in mine.itertuples()]
    wide = mine.pivot_table(index=["method", "student"], columns="fraction", values="text", aggfunc="first")
    rows = []
    for method in grid.all_methods:
        for student in grid.students:
            size = mine[(mine.method == method) & (mine.student == student)].params_m
            texts = [wide.loc[(method, student), f] if (method, student) in wide.index and f in wide.columns
                     and pd.notna(wide.loc[(method, student), f]) else "–" for f in fractions]
            rows.append([method_look(method).title, student, f"{size.iloc[0]:g}" if len(size) else "?", *texts])
    t = res.teacher.set_index("dataset").loc[dataset]
    teacher_text = f"{t.accuracy:.1%}" + (f" ({t.exact_accuracy:.1%})" if pd.notna(t.exact_accuracy) else "")
    rows.append(["teacher (few-shot CoT)", teacher_name, "–", *[teacher_text] * len(fractions)])
    return pd.DataFrame(rows, columns=["method", "student", "params (M)", *columns]).to_markdown(index=False)


def _facts(dataset: str, context: dict[str, Any]) -> dict[str, Any]:
    """A dataset's split sizes, the corpus's note and the teacher on the full test set (each None without)."""
    split = context.get("splits", {}).get(dataset)
    teacher, full = context.get("baseline", {}).get(dataset), None
    if teacher:
        whole = teacher.get("full_test", teacher)
        full = {"n": whole["n"], "exact": f"{whole['exact_accuracy']:.2%}", "exact_correct": whole["exact_correct"],
                "lenient": f"{whole['accuracy']:.2%}", "unparsed": whole.get("unparsed", 0)}
    keys = ("test", "test_available", "valid", "pool_used", "pool_available")
    return {"split": {k: split.get(k) for k in keys} if split else None,
            "note": context.get("notes", {}).get(dataset), "teacher": full,
            "annotation": _annotation(context.get("corpus", {}).get(dataset))}


def _annotation(corpus: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a live teacher's annotation took (a corpus summary with a ``run``): completions, retries, tokens,
    unparsed completions and, with a price, the cost; None for the recorded PaLM completions."""
    if not corpus or "run" not in corpus:
        return None
    splits = corpus["splits"].values()
    cost = corpus.get("cost")
    return {"examples": corpus["run"]["examples"], "retries": corpus["run"]["retries"],
            "prompt_tokens": f"{sum(s.get('prompt_tokens') or 0 for s in splits):,}",
            "completion_tokens": f"{sum(s.get('completion_tokens') or 0 for s in splits):,}",
            "unparsed": sum(s["unparsed"] for s in splits), "usd": f"{cost['usd']:.2f}" if cost else None}


def _curve_summary(curves: list[Curve]) -> dict[str, Any] | None:
    """Whether training had flattened: the largest validation gain over the last quarter of the steps, and
    how many points still gained more than ``STILL_LEARNING``."""
    if not curves:
        return None
    steep = max(curves, key=lambda c: c.late_gain())
    return {"gain": f"{100 * steep.late_gain():+.1f}", "method": method_look(steep.method).title,
            "student": steep.student, "fraction": pct(steep.fraction), "total": len(curves),
            "rising": sum(c.late_gain() > STILL_LEARNING for c in curves), "threshold": f"{100 * STILL_LEARNING:g}"}


@cache
def _template() -> Template:
    folder, name = PACKAGE_DATA[0].rsplit("/", 1)
    # StrictUndefined: a name the context lacks fails the stage rather than leaving a blank in the report
    env = Environment(loader=PackageLoader(__package__, folder), undefined=StrictUndefined, autoescape=False,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(name)


def _collapse_summary(flags: pd.DataFrame, dataset: str) -> dict[str, Any]:
    """A dataset's collapse checks for the template: how many cells were checked and each flagged one's reasons."""
    mine = flags[flags.dataset == dataset]
    return {"checked": len(mine), "cells": [{"name": Cell(f.dataset, f.method, f.student, f.fraction, f.seed).name,
                                             "reasons": f.reasons} for f in mine[mine.collapsed].itertuples()]}


def _per_class(classes: list[ClassResult], dataset: str) -> dict[str, Any] | None:
    """A dataset's per-class section for the template (None where it has no label set or no results)."""
    table = recall_markdown(classes, dataset) if class_labels(dataset) is not None else None
    if table is None:
        return None
    return {"labels": list(class_labels(dataset) or ()), "table": table}


def _variant_text(record: Mapping[str, Any]) -> str:
    """``step_by_step with alpha 0.3, labels gold``: a variant's method and its settings."""
    rest = [f"{k} {v}" for k, v in record.items() if k not in ("name", "variant")]
    return record["name"] + (" with " + ", ".join(rest) if rest else "")


def _variant_table(comps: pd.DataFrame, grid: GridConfig, dataset: str) -> str | None:
    """Each variant against fine-tuning and against its method, at each point (Markdown), or None."""
    mine = comps[(comps.dataset == dataset) & comps.method.isin(grid.variants) & (comps.against != TEACHER)]
    if mine.empty:
        return None
    rows = [[r.method, method_look(r.against).title, r.student, pct(r.fraction), _iv(r).points(), r.verdict]
            for r in mine.itertuples()]
    return pd.DataFrame(rows, columns=["variant", "against", "student", "fraction", "difference", "verdict"]
                        ).to_markdown(index=False)


def markdown(res: GridResults, points: pd.DataFrame, comps: pd.DataFrame, grid: GridConfig, context: dict[str, Any],
             curves: list["Curve"] | None = None, flags: pd.DataFrame | None = None,
             classes: list[ClassResult] | None = None) -> str:
    """The human-readable report: accuracy tables with intervals, the teacher, verdicts on the paper's claims,
    collapsed cells, per-class recall (``templates/results.md.j2`` lays them out). Without ``flags`` and
    ``classes`` they are computed from ``res``."""
    name = context.get("teacher_name", TEACHER)
    flags = collapse_table(res, _bootstraps(res)) if flags is None else flags
    classes = class_results(res, grid, name) if classes is None else classes
    datasets = [{"name": d, "title": dataset_title(d), "facts": _facts(d, context),
                 "table": accuracy_table(points, res, grid, d, name, flags), "claims": claims(comps, points, d),
                 "agreement": agreement(comps[comps.dataset == d], points[points.dataset == d], d,
                                        max(grid.fractions)),
                 "curves": None if curves is None else _curve_summary([c for c in curves if c.dataset == d]),
                 "collapse": _collapse_summary(flags, d), "per_class": _per_class(classes, d),
                 "variants": _variant_table(comps, grid, d)}
                for d in grid.datasets]
    missing = {"count": len(res.missing), "total": len(grid.cells()), "names": [c.name for c in res.missing[:12]],
               "more": len(res.missing) > 12} if res.missing else None
    return _template().render(seeds=list(grid.seeds), rules=RULES, teacher_name=name, missing=missing,
                              datasets=datasets, one_answer=f"{ONE_ANSWER:.0%}",
                              variants=context.get("variants", {}))


# ----- the stage -----

def teacher_name(teacher: TeacherConfig) -> str:
    """How reports name the teacher: the recorded PaLM, people, or the live teacher's model."""
    if teacher.name == "palm":
        return "PaLM 540B"
    if teacher.name == "human":
        return "human rationales, gold labels"
    block = getattr(teacher, teacher.name)
    return str(getattr(block, "model", None) or teacher.name)


def _csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_open(path) as fh:
        frame.to_csv(fh, index=False, lineterminator="\n", float_format="%.6g")


def build_report(settings: Settings, results_root: str | Path, reports_root: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write results.csv, comparisons.csv, per_class.csv, results.md, summary.json (DVC's metrics), the plots
    and their data (DVC's plots) under ``out_dir``; returns a small summary."""
    import matplotlib

    matplotlib.use("Agg")
    grid, reports_root, out_dir = settings.grid, Path(reports_root), Path(out_dir)
    name = teacher_name(settings.teacher)
    res = collect(results_root, reports_root, grid)
    bases = {v: settings.method(v).name for v in grid.variants}
    points, comps = point_table(res, grid), comparison_table(res, grid, bases)
    flags, classes = collapse_table(res, _bootstraps(res)), class_results(res, grid, name)
    _csv(results_table(res, points, flags), out_dir / "results.csv")
    _csv(comps, out_dir / "comparisons.csv")
    _csv(per_class_table(classes), out_dir / PER_CLASS_FILE)
    context: dict[str, Any] = {"teacher_name": name, "baseline": read_json(reports_root / "baseline.json"),
                               "splits": {}, "notes": {}, "corpus": {},
                               "variants": {v: _variant_text(settings.method(v).record()) for v in grid.variants}}
    for dataset in grid.datasets:
        context["splits"][dataset] = read_json(reports_root / "splits" / f"{dataset}.json")
        info = context["corpus"][dataset] = read_json(reports_root / "corpus" / f"{dataset}.json")
        if "note" in info:
            context["notes"][dataset] = info["note"]
    curves = collect_curves(results_root, grid)
    _csv(plot_by_fraction_table(points, res, grid), out_dir / "accuracy_by_fraction.csv")
    _csv(plot_curves_table(curves), out_dir / "valid_curves.csv")
    with atomic_open(out_dir / "results.md") as fh:
        fh.write(markdown(res, points, comps, grid, context, curves, flags, classes))
    # under the pipeline's name (results/<name>: demo, or the grid's), so that DVC's column names (which
    # it prefixes with the file's path when two files share a name) stay short and say which pipeline
    write_json(out_dir / "summary.json", {Path(results_root).name: summary_metrics(points, comps, res, flags)})
    teacher, plots = res.teacher.set_index("dataset").accuracy, []
    for dataset in grid.datasets:
        mine = points[points.dataset == dataset]
        plots.append(plot_by_fraction(mine, grid, dataset, teacher[dataset], name, out_dir / "plots" / f"{dataset}_by_fraction.png"))
        plots.append(plot_by_size(mine, grid, dataset, teacher[dataset], name, out_dir / "plots" / f"{dataset}_by_size.png"))
        plots.append(plot_curves([c for c in curves if c.dataset == dataset], grid, dataset,
                                 out_dir / "plots" / f"{dataset}_valid_curves.png"))
        if any(r.dataset == dataset for r in classes):
            plots.append(plot_confusions([r for r in classes if r.dataset == dataset], dataset,
                                         out_dir / "plots" / f"{dataset}_confusion.png"))
    return {"cells": len(res.cells), "missing": len(res.missing), "collapsed": int(flags.collapsed.sum()),
            "comparisons": len(comps), "plots": [str(p) for p in plots]}
