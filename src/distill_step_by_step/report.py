"""The ``report`` stage: every grid cell and the teacher baseline as a CSV, a Markdown report and plots.

Everything here is read from files other stages wrote (``results/**/metrics.json`` from ``evaluate``,
``reports/baseline.json`` from ``baseline``, ``reports/corpus/*.json`` from ``annotate``,
``data/splits/*/summary.json`` from ``split``), so every number can be traced to the stage that made it.
"""

from __future__ import annotations

import csv
import itertools
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError
from .jsonio import atomic_open, read_json

CSV_FIELDS = ("dataset", "method", "student", "params_m", "fraction", "n_train", "seed", "accuracy")
TEACHER = "teacher"
DATASET_TITLES = {"esnli": "e-SNLI", "anli1": "ANLI-R1", "cqa": "CommonsenseQA", "svamp": "SVAMP"}
METHOD_TITLES = {"finetune": "standard fine-tuning", "distill": "standard distillation",
                 "step_by_step": "distilling step-by-step", "single_task": "single-task (rationale+label)",
                 TEACHER: "teacher (few-shot CoT)"}
# Accuracy of guessing uniformly among the answer options (SVAMP has no closed answer set).
CHANCE = {"esnli": 1 / 3, "anli1": 1 / 3, "cqa": 1 / 5}
METHOD_STYLE = {"finetune": ("tab:blue", "o"), "distill": ("tab:orange", "s"), "step_by_step": ("tab:green", "^"),
                "single_task": ("tab:purple", "D")}
# From the paper's abstract (Hsieh et al., 2023), quoted, not re-measured: the exact per-cell figures are
# plotted in the paper's figures and are not transcribed here.
PAPER_CLAIMS = (
    "Distilling step-by-step with a 770M T5 outperforms few-shot prompted PaLM 540B using only 80% of the "
    "available data on a benchmark, whereas standard fine-tuning of the same T5 struggles to match it even "
    "with 100% of the data.",
    "Compared with both standard fine-tuning and standard distillation, it reaches better accuracy with far "
    "fewer labeled / unlabeled training examples, and beats few-shot LLMs with substantially smaller models.",
)


@dataclass(frozen=True)
class Grid:
    """The lists in ``params.yaml: grid``."""

    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    students: tuple[str, ...]
    fractions: tuple[Any, ...]
    seeds: tuple[int, ...]

    @classmethod
    def from_params(cls, grid: dict[str, Any]) -> "Grid":
        return cls(*(tuple(grid[k]) for k in ("datasets", "methods", "students", "fractions", "seeds")))

    def cells(self):
        return itertools.product(self.datasets, self.methods, self.students, self.fractions, self.seeds)


def collect_rows(results_root: str | Path, grid: Grid, baseline: dict[str, Any], teacher_name: str) -> list[dict[str, Any]]:
    """One row per (cell, seed) from the evaluate stages' metrics, plus one teacher row per dataset.

    A grid cell without metrics is an error (the report must cover every cell of the grid)."""
    rows = []
    for dataset, method, student, fraction, seed in grid.cells():
        path = Path(results_root) / dataset / method / student / f"f{fraction}-s{seed}" / "metrics.json"
        if not path.is_file():
            raise DataError("missing metrics of a grid cell (run `dvc repro`)", path=str(path))
        m = read_json(path)
        cell = m.get("cell", {})
        rows.append({"dataset": dataset, "method": method, "student": student, "params_m": cell.get("params_m"),
                     "fraction": float(fraction), "n_train": cell.get("n_train"), "seed": int(seed),
                     "accuracy": m["accuracy"]})
    for dataset in grid.datasets:
        if dataset not in baseline:
            raise DataError(f"no teacher baseline for {dataset!r}", path="reports/baseline.json")
        rows.append({"dataset": dataset, "method": TEACHER, "student": teacher_name, "params_m": None,
                     "fraction": None, "n_train": None, "seed": None, "accuracy": baseline[dataset]["accuracy"]})
    return rows


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """``results.csv``: one row per cell and seed (the teacher with ``method=teacher``)."""
    with atomic_open(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_FIELDS})


@dataclass
class Cell:
    """Accuracy of one (dataset, method, student, fraction) over its seeds."""

    dataset: str
    method: str
    student: str
    params_m: float
    fraction: float
    n_train: int
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else None


def aggregate(rows: list[dict[str, Any]]) -> list[Cell]:
    """Group the student rows by cell (mean and sample standard deviation over seeds)."""
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["method"] != TEACHER:
            groups[(r["dataset"], r["method"], r["student"], r["fraction"])].append(r)
    return [Cell(d, m, s, float(rs[0]["params_m"] or 0.0), f, int(rs[0]["n_train"] or 0), [r["accuracy"] for r in rs])
            for (d, m, s, f), rs in groups.items()]


def teacher_accuracy(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The teacher's accuracy per dataset."""
    return {r["dataset"]: r["accuracy"] for r in rows if r["method"] == TEACHER}


def beats_teacher(cells: list[Cell], teacher: dict[str, float]) -> dict[str, dict[str, str]]:
    """Per dataset and method: the smallest fraction and the smallest student whose mean beats the teacher."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    by = defaultdict(list)
    for c in cells:
        by[(c.dataset, c.method)].append(c)
    for (dataset, method), cs in sorted(by.items()):
        wins = [c for c in cs if c.mean > teacher[dataset]]
        if not wins:
            best = max(cs, key=lambda c: c.mean)
            out[dataset][method] = (f"never (best {best.mean:.1%}: {best.student}, {_pct(best.fraction)} of the data; "
                                    f"teacher {teacher[dataset]:.1%})")
            continue
        by_frac = min(wins, key=lambda c: (c.fraction, c.params_m))
        by_size = min(wins, key=lambda c: (c.params_m, c.fraction))
        out[dataset][method] = (f"smallest fraction {_pct(by_frac.fraction)} ({by_frac.student}, {by_frac.mean:.1%}); "
                                f"smallest student {by_size.student} ({by_size.params_m:g}M, fraction "
                                f"{_pct(by_size.fraction)}, {by_size.mean:.1%})")
    return out


def _pct(fraction: float | str) -> str:
    """A data fraction as a percentage: 0.125 -> '12.5%'."""
    return f"{100 * float(fraction):.4g}%"


def _fmt(cell: Cell) -> str:
    return f"{cell.mean:.1%} ± {cell.std:.1%}" if cell.std is not None else f"{cell.mean:.1%}"


def markdown(rows: list[dict[str, Any]], grid: Grid, context: dict[str, Any]) -> str:
    """The human-readable report: tables of mean ± std over seeds, who beats the teacher, the paper's claims."""
    cells = aggregate(rows)
    teacher = teacher_accuracy(rows)
    index = {(c.dataset, c.method, c.student, c.fraction): c for c in cells}
    n_seeds = len(grid.seeds)
    lines = [
        "# Results",
        "",
        "Generated by the `report` stage from `results/**/metrics.json` (stage `evaluate`), `reports/baseline.json` "
        "(stage `baseline`), `reports/corpus/*.json` (stage `annotate`) and `data/splits/*/summary.json` (stage "
        "`split`). Do not edit by hand: run `dvc repro`.",
        "",
        f"Accuracy on test, mean ± sample standard deviation over {n_seeds} seed(s) "
        f"({', '.join(map(str, grid.seeds))}){'; a single seed has no spread' if n_seeds == 1 else ''}. "
        f"Teacher: {context.get('teacher_name', TEACHER)}, its few-shot chain-of-thought accuracy on the same test examples.",
        "",
    ]
    for dataset in grid.datasets:
        split = context.get("splits", {}).get(dataset, {})
        lines += [f"## {DATASET_TITLES.get(dataset, dataset)}", ""]
        facts = []
        if split:
            facts.append(f"test examples: {split.get('test')} of {split.get('test_available')}")
            facts.append(f"validation: {split.get('valid')} (fixed; model selection only)")
            facts.append(f"training pool: {split.get('pool_used')} of {split.get('pool_available')}")
        note = context.get("notes", {}).get(dataset)
        if note:
            facts.append(note)
        if facts:
            lines += ["- " + f for f in facts] + [""]
        header = ["method", "student", "params (M)"] + [f"{_pct(f)} (n={_n(index, dataset, grid, f)})" for f in grid.fractions]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in grid.methods:
            for student in grid.students:
                first = index.get((dataset, method, student, float(grid.fractions[0])))
                params = f"{first.params_m:g}" if first else "?"
                vals = [(_fmt(c) if (c := index.get((dataset, method, student, float(f)))) else "–") for f in grid.fractions]
                lines.append("| " + " | ".join([METHOD_TITLES.get(method, method), student, params] + vals) + " |")
        lines.append(f"| {METHOD_TITLES[TEACHER]} | {context.get('teacher_name', TEACHER)} | – | "
                     + " | ".join([f"{teacher[dataset]:.1%}"] * len(grid.fractions)) + " |")
        lines += ["", "Smallest data fraction and smallest student at which each method beats the teacher:", ""]
        verdicts = beats_teacher([c for c in cells if c.dataset == dataset], teacher)[dataset]
        for method in [m for m in grid.methods if m in verdicts]:
            text = verdicts[method]
            lines.append(f"- {METHOD_TITLES.get(method, method)}: {text}")
        lines += ["", f"![accuracy vs training fraction](plots/{dataset}_by_fraction.png)",
                  f"![accuracy vs student size](plots/{dataset}_by_size.png)", ""]
    lines += ["## The paper's findings (quoted from Hsieh et al., 2023, not measured here)", ""]
    lines += [f"- {claim}" for claim in PAPER_CLAIMS]
    lines += ["", "These were obtained with T5 v1.1 students (220M-11B) on GPUs/TPUs; the `paper` profile "
              "in README.md runs that grid. Numbers in the tables above come only from this repository's stages.", ""]
    return "\n".join(lines)


def _n(index: dict, dataset: str, grid: Grid, fraction: Any) -> str:
    for method, student in itertools.product(grid.methods, grid.students):
        c = index.get((dataset, method, student, float(fraction)))
        if c:
            return str(c.n_train)
    return "?"


def plot_dataset(rows: list[dict[str, Any]], grid: Grid, dataset: str, out_dir: str | Path, teacher_name: str) -> list[Path]:
    """Two PNGs per dataset: accuracy vs training fraction (a panel per student) and vs student size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in aggregate(rows) if c.dataset == dataset]
    teacher = teacher_accuracy(rows)[dataset]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = DATASET_TITLES.get(dataset, dataset)
    students = sorted({c.student for c in cells}, key=lambda s: min(c.params_m for c in cells if c.student == s))
    paths = []

    fig, axes = plt.subplots(1, len(students), figsize=(5.2 * len(students), 4.2), sharey=True, squeeze=False)
    for ax, student in zip(axes[0], students):
        for method in grid.methods:
            cs = sorted((c for c in cells if c.student == student and c.method == method), key=lambda c: c.fraction)
            if not cs:
                continue
            color, marker = METHOD_STYLE.get(method, ("gray", "x"))
            xs, ys = [c.fraction for c in cs], [c.mean for c in cs]
            ax.plot(xs, ys, marker=marker, color=color, label=METHOD_TITLES.get(method, method))
            if any(c.std is not None for c in cs):
                lo = [c.mean - (c.std or 0) for c in cs]
                hi = [c.mean + (c.std or 0) for c in cs]
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.axhline(teacher, color="black", linestyle="--", linewidth=1.2, label=f"{teacher_name} (teacher)")
        _chance(ax, dataset)
        ax.set_xscale("log", base=2)
        fracs = sorted({c.fraction for c in cells})
        ax.set_xticks(fracs, [f"{f:g}\n(n={_n_train(cells, f)})" for f in fracs])
        ax.minorticks_off()
        params = next(c.params_m for c in cells if c.student == student)
        ax.set_title(f"{student} ({params:g}M params)")
        ax.set_xlabel("fraction of the training pool")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{title}: accuracy vs amount of training data" + _seed_note(grid))
    fig.tight_layout()
    paths.append(out_dir / f"{dataset}_by_fraction.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    largest = max(c.fraction for c in cells)
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for method in grid.methods:
        cs = sorted((c for c in cells if c.method == method and c.fraction == largest), key=lambda c: c.params_m)
        if not cs:
            continue
        color, marker = METHOD_STYLE.get(method, ("gray", "x"))
        ax.errorbar([c.params_m for c in cs], [c.mean for c in cs], yerr=[c.std or 0 for c in cs], marker=marker,
                    color=color, capsize=3, label=METHOD_TITLES.get(method, method))
    ax.axhline(teacher, color="black", linestyle="--", linewidth=1.2, label=f"{teacher_name} (teacher)")
    _chance(ax, dataset)
    ax.set_xscale("log")
    sizes = sorted({c.params_m for c in cells})
    ax.set_xticks(sizes, [f"{s:g}M\n{_student_of(cells, s)}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("student size (parameters)")
    ax.set_ylabel("test accuracy")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{title}: accuracy vs student size ({_pct(largest)} of the data)" + _seed_note(grid))
    fig.tight_layout()
    paths.append(out_dir / f"{dataset}_by_size.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _chance(ax: Any, dataset: str) -> None:
    if dataset in CHANCE:
        ax.axhline(CHANCE[dataset], color="gray", linestyle=":", linewidth=1.2, label="chance")
    ax.set_ylim(0, 1)


def _n_train(cells: list[Cell], fraction: float) -> int:
    return next(c.n_train for c in cells if c.fraction == fraction)


def _student_of(cells: list[Cell], params_m: float) -> str:
    return next(c.student for c in cells if c.params_m == params_m)


def _seed_note(grid: Grid) -> str:
    return f"\nmean ± std over {len(grid.seeds)} seeds" if len(grid.seeds) > 1 else "\n(1 seed: no spread)"


def build_report(params: dict[str, Any], results_root: str | Path, baseline_path: str | Path, corpus_reports: str | Path,
                 splits_root: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write results.csv, results.md and the plots under ``out_dir``; returns a small summary."""
    grid = Grid.from_params(params["grid"])
    teacher_name = teacher_label(params.get("teacher", {}))
    baseline = read_json(baseline_path)
    rows = collect_rows(results_root, grid, baseline, teacher_name)
    out_dir = Path(out_dir)
    write_csv(rows, out_dir / "results.csv")
    context: dict[str, Any] = {"teacher_name": teacher_name, "splits": {}, "notes": {}}
    for dataset in grid.datasets:
        split_summary = Path(splits_root) / dataset / "summary.json"
        if split_summary.is_file():
            context["splits"][dataset] = read_json(split_summary)
        corpus_summary = Path(corpus_reports) / f"{dataset}.json"
        if corpus_summary.is_file() and "note" in (info := read_json(corpus_summary)):
            context["notes"][dataset] = info["note"]
    with atomic_open(out_dir / "results.md") as fh:
        fh.write(markdown(rows, grid, context))
    plots = [p for d in grid.datasets for p in plot_dataset(rows, grid, d, out_dir / "plots", teacher_name)]
    return {"cells": len(aggregate(rows)), "rows": len(rows), "plots": [str(p) for p in plots]}


def teacher_label(teacher: dict[str, Any]) -> str:
    """How reports name the teacher: the recorded PaLM, or the live teacher's model."""
    if teacher.get("name", "palm") == "palm":
        return "PaLM 540B"
    return str(teacher.get("model") or teacher["name"])
