"""The report's plots: accuracy against the amount of training data and against student size (with the
teacher's line, chance, and 95% bands), validation curves during training, and confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.datasets import get_spec
from ..settings import GridConfig
from .classes import OTHER, ClassResult
from .presentation import dataset_title, method_look, pct
from .reading import TEACHER, Curve


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
        for method in grid.all_methods:
            ps = points[(points.student == student) & (points.method == method)].sort_values("fraction")
            if ps.empty:
                continue
            color, marker = method_look(method).color, method_look(method).marker
            ax.plot(ps.fraction, ps.accuracy, marker=marker, color=color, label=method_look(method).title)
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
    for method in grid.all_methods:
        ps = at[at.method == method].sort_values("params_m")
        if not ps.empty:
            color, marker = method_look(method).color, method_look(method).marker
            ax.errorbar(ps.params_m, ps.accuracy, yerr=[ps.accuracy - ps.low, ps.high - ps.accuracy], marker=marker,
                        color=color, capsize=3, label=method_look(method).title)
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
        for method in grid.all_methods:
            color, marker = method_look(method).color, method_look(method).marker
            for fraction, style in zip(shown, ("-", "--")):
                c = next((c for c in curves if (c.student, c.method, c.fraction) == (student, method, fraction)), None)
                if c:
                    ax.plot(c.steps, c.accuracies, style, marker=marker, markersize=3, color=color,
                            label=f"{method_look(method).title}, {pct(fraction)} of the data")
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


def confusion_panels(results: list[ClassResult]) -> list[ClassResult]:
    """What a dataset's confusion figure shows: each (method, student) at its largest fraction with results, in
    the order given, then the teacher."""
    largest: dict[tuple[str, str], ClassResult] = {}
    for r in results:
        key = (r.method, r.student)
        if key not in largest or (r.fraction or 0) > (largest[key].fraction or 0):
            largest[key] = r
    return list(largest.values())


def _confusion_layout(panels: list[ClassResult]) -> dict[tuple[int, int], ClassResult]:
    """Where each panel goes: a row per student, a column per method, in the order given; the teacher in a
    column of its own, on the first row."""
    students = list(dict.fromkeys(r.student for r in panels if r.method != TEACHER))
    methods = list(dict.fromkeys(r.method for r in panels if r.method != TEACHER))
    at = {(students.index(r.student), methods.index(r.method)): r for r in panels if r.method != TEACHER}
    at.update({(0, len(methods)): r for r in panels if r.method == TEACHER})
    return at


def plot_confusions(results: list[ClassResult], dataset: str, path: Path) -> Path:
    """One confusion matrix per panel (``confusion_panels``): gold rows, predicted columns, each cell coloured by
    its share of the row and labelled with it and the count (summed over the seeds)."""
    import matplotlib.pyplot as plt

    panels = confusion_panels(results)
    labels = list(panels[0].labels) if panels else []
    other = any(r.matrix[:, -1].any() for r in panels)  # the column for answers outside the set, where there are any
    columns = [*labels, OTHER] if other else labels
    layout = _confusion_layout(panels)
    nrows, ncols = (max(i for i, _ in layout) + 1, max(j for _, j in layout) + 1) if layout else (1, 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 0.4, 3.7 * nrows + 0.6), squeeze=False)
    for (i, j), ax in np.ndenumerate(axes):
        if (i, j) not in layout:
            ax.axis("off")
            continue
        r = layout[(i, j)]
        counts = r.matrix if other else r.matrix[:, :-1]
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (row, col), share in np.ndenumerate(shares):
            ax.text(col, row, f"{share:.0%}\n({counts[row, col]})", ha="center", va="center", fontsize=8,
                    color="white" if share > 0.6 else "black")
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        seeds = f"{r.seeds} seed{'s' if r.seeds > 1 else ''}"
        where = "" if r.fraction is None else f", {pct(r.fraction)} of the data, {seeds}"
        ax.set_title(f"{r.title}\n{r.student}{where}", fontsize=9)
    fig.suptitle(f"{dataset_title(dataset)}: test confusion matrices (share of each gold row; count over the "
                 "seeds in brackets)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, legend_room=False)


def _legend_below(fig: Any, ax: Any) -> None:
    # Below the axes, so no point near chance level or the teacher line is hidden.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize=8, frameon=False)


def _save(fig: Any, path: Path, legend_room: bool = True) -> Path:
    import matplotlib.pyplot as plt

    if legend_room:
        fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: the bytes depend on the data only
    plt.close(fig)
    return path
