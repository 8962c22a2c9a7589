"""The ``report`` stage: every grid cell and the teacher baseline as a CSV, a Markdown report and plots.

Everything here is read from files other stages wrote and that are committed beside the report
(``<results>/**/metrics.json`` and ``valid_curve.json`` from ``train_test``, ``<reports>/baseline.json`` from ``baseline``,
``<reports>/corpus/*.json`` from ``annotate``, ``<reports>/splits/*.json`` from ``split``), so every
number traces to the stage that made it and the report rebuilds without retraining.

Accuracies are given under both scoring rules of :mod:`.scoring`: ``lenient`` (the headline) and
``exact`` (the authors' rule, to compare with the paper).
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cell import CURVE_FILE, Cell
from .errors import DataError
from .jsonio import atomic_open, read_json
from .scoring import RULES
from .settings import GridConfig, Settings, TeacherConfig

CSV_FIELDS = ("dataset", "method", "student", "params_m", "fraction", "n_train", "seed", "accuracy", "exact_accuracy")
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


def collect_rows(results_root: str | Path, grid: GridConfig, baseline: dict[str, Any], teacher_name: str) -> list[dict[str, Any]]:
    """One row per (cell, seed) from the train_test stages' metrics, plus one teacher row per dataset.

    The teacher row is its accuracy on the students' test examples. A grid cell without metrics (a grid
    that its workers have not finished) has no row: :func:`missing_cells` lists them."""
    rows = []
    for dataset, method, student, fraction, seed in grid.cells():
        path = Cell(dataset, method, student, str(fraction), seed).results_dir(results_root) / "metrics.json"
        if not path.is_file():
            continue
        m = read_json(path)
        cell = m.get("cell", {})
        rows.append({"dataset": dataset, "method": method, "student": student, "params_m": cell.get("params_m"),
                     "fraction": float(fraction), "n_train": cell.get("n_train"), "seed": int(seed),
                     "accuracy": m["accuracy"], "exact_accuracy": m.get("exact_accuracy")})
    for dataset in grid.datasets:
        if dataset not in baseline:
            raise DataError(f"no teacher baseline for {dataset!r}", path="baseline.json", hint="run `dvc repro baseline`")
        b = baseline[dataset]
        rows.append({"dataset": dataset, "method": TEACHER, "student": teacher_name, "params_m": None, "fraction": None,
                     "n_train": None, "seed": None, "accuracy": b["accuracy"], "exact_accuracy": b.get("exact_accuracy")})
    return rows


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
        """How much validation accuracy rose over the last quarter of training: near zero once it has flattened."""
        last = self.steps[-1]
        before = [a for s, a in zip(self.steps, self.accuracies) if s <= 0.75 * last] or self.accuracies[:1]
        return self.accuracies[-1] - before[-1]


def missing_cells(results_root: str | Path, grid: GridConfig) -> list[Cell]:
    """The grid's cells that have no results yet."""
    cells = [Cell(d, m, s, str(f), seed) for d, m, s, f, seed in grid.cells()]
    return [c for c in cells if not (c.results_dir(results_root) / "metrics.json").is_file()]


def collect_curves(results_root: str | Path, grid: GridConfig) -> list[Curve]:
    """Every grid point's validation curve (mean over seeds at the steps all its seeds validated at)."""
    runs: dict[tuple[str, str, str, float], list[dict[int, float]]] = defaultdict(list)
    for dataset, method, student, fraction, seed in grid.cells():
        path = Cell(dataset, method, student, str(fraction), seed).results_dir(results_root) / CURVE_FILE
        if not path.is_file():
            continue
        runs[(dataset, method, student, float(fraction))].append({p["step"]: p["valid_accuracy"] for p in read_json(path)})
    curves = []
    for (dataset, method, student, fraction), seeds in runs.items():
        steps = sorted(set.intersection(*(set(s) for s in seeds)))
        if steps:
            curves.append(Curve(dataset, method, student, fraction, steps,
                                [statistics.fmean(s[step] for s in seeds) for step in steps]))
    return curves


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """``results.csv``: one row per cell and seed (the teacher with ``method=teacher``)."""
    with atomic_open(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_FIELDS})


@dataclass
class GridPoint:
    """One (dataset, method, student, fraction) of the grid: its cells' accuracies over the seeds."""

    dataset: str
    method: str
    student: str
    params_m: float
    fraction: float
    n_train: int
    accuracies: list[float]
    exact_accuracies: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else None

    @property
    def exact_mean(self) -> float | None:
        values = [a for a in self.exact_accuracies if a is not None]
        return statistics.fmean(values) if values else None


def aggregate(rows: list[dict[str, Any]]) -> list[GridPoint]:
    """Group the student rows by grid point (mean and sample standard deviation over seeds)."""
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["method"] != TEACHER:
            groups[(r["dataset"], r["method"], r["student"], r["fraction"])].append(r)
    return [GridPoint(d, m, s, float(rs[0]["params_m"] or 0.0), f, int(rs[0]["n_train"] or 0),
                      [r["accuracy"] for r in rs], [r.get("exact_accuracy") for r in rs])
            for (d, m, s, f), rs in groups.items()]


def teacher_accuracy(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The teacher's (lenient) accuracy per dataset, on the students' test examples."""
    return {r["dataset"]: r["accuracy"] for r in rows if r["method"] == TEACHER}


def beats_teacher(points: list[GridPoint], teacher: dict[str, float]) -> dict[str, dict[str, str]]:
    """Per dataset and method: the smallest fraction and the smallest student whose mean beats the teacher."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    by = defaultdict(list)
    for p in points:
        by[(p.dataset, p.method)].append(p)
    for (dataset, method), ps in sorted(by.items()):
        wins = [p for p in ps if p.mean > teacher[dataset]]
        if not wins:
            best = max(ps, key=lambda p: p.mean)
            out[dataset][method] = (f"never (best {best.mean:.1%}: {best.student}, {pct(best.fraction)} of the data; "
                                    f"teacher {teacher[dataset]:.1%})")
            continue
        by_frac = min(wins, key=lambda p: (p.fraction, p.params_m))
        by_size = min(wins, key=lambda p: (p.params_m, p.fraction))
        out[dataset][method] = (f"smallest fraction {pct(by_frac.fraction)} ({by_frac.student}, {by_frac.mean:.1%}); "
                                f"smallest student {by_size.student} ({by_size.params_m:g}M, fraction "
                                f"{pct(by_size.fraction)}, {by_size.mean:.1%})")
    return out


# The methods claim (a) compares step-by-step with, as the claim names them.
RIVALS = {"finetune": "fine-tuning", "distill": "distillation"}


def step_by_step_wins(points: list[GridPoint], dataset: str) -> tuple[int, int, list[str]]:
    """Claim (a): at how many (student, fraction) points step-by-step's mean beats both other methods."""
    index = {(p.method, p.student, p.fraction): p for p in points if p.dataset == dataset}
    wins, total, lines = 0, 0, []
    for (method, student, fraction), sbs in sorted(index.items()):
        if method != "step_by_step":
            continue
        rivals = [index[(m, student, fraction)] for m in RIVALS if (m, student, fraction) in index]
        if not rivals:
            continue
        total += 1
        won = all(sbs.mean > r.mean for r in rivals)
        wins += won
        lines.append(f"{student} at {pct(fraction)}: step-by-step {sbs.mean:.1%} vs "
                     + ", ".join(f"{r.method} {r.mean:.1%}" for r in rivals) + (" (wins)" if won else ""))
    return wins, total, lines


def data_to_match_finetune(points: list[GridPoint], dataset: str) -> dict[str, str]:
    """Claim (b): per student, the smallest fraction at which step-by-step reaches fine-tuning on all the data."""
    out = {}
    for student in sorted({p.student for p in points if p.dataset == dataset}):
        mine = [p for p in points if p.dataset == dataset and p.student == student]
        full = [p for p in mine if p.method == "finetune"]
        if not full:
            continue
        target = max(full, key=lambda p: p.fraction)
        reached = sorted((p for p in mine if p.method == "step_by_step" and p.mean >= target.mean), key=lambda p: p.fraction)
        out[student] = (f"{pct(reached[0].fraction)} of the data ({reached[0].mean:.1%} vs fine-tuning's {target.mean:.1%} "
                        f"at {pct(target.fraction)})" if reached else
                        f"not reached (fine-tuning at {pct(target.fraction)}: {target.mean:.1%})")
    return out


def pct(fraction: float | str) -> str:
    """A data fraction as a percentage: 0.125 -> '12.5%'."""
    return f"{100 * float(fraction):.4g}%"


def _fmt(point: GridPoint) -> str:
    text = f"{point.mean:.1%} ± {point.std:.1%}" if point.std is not None else f"{point.mean:.1%}"
    return text + (f" ({point.exact_mean:.1%})" if point.exact_mean is not None else "")


def markdown(rows: list[dict[str, Any]], grid: GridConfig, context: dict[str, Any],
             curves: list[Curve] | None = None) -> str:
    """The human-readable report: tables of mean ± std over seeds, the teacher, the paper's claims."""
    points = aggregate(rows)
    seeds = len(grid.seeds)
    lines = [
        "# Results", "",
        "Generated by the `report` stage from the per-cell `metrics.json` (stage `train_score`), `baseline.json` "
        "(stage `baseline`), `corpus/*.json` (stage `annotate`) and `splits/*.json` (stage `split`). Do not edit by "
        "hand: run `dvc repro`.", "",
        f"Test accuracy, mean ± sample standard deviation over {seeds} seed(s) ({', '.join(map(str, grid.seeds))})"
        f"{'; a single seed has no spread' if seeds == 1 else ''}. Each cell gives the **lenient** accuracy "
        f"({RULES['lenient']}), then in brackets the **exact** accuracy ({RULES['exact']}). Checkpoints are "
        "selected on validation (lenient rule); test is scored once.", "",
    ]
    if missing := context.get("missing"):
        lines += [f"**{len(missing)} of {len(grid.cells())} cells of this grid have no results yet** (shown as –): "
                  + ", ".join(c.name for c in missing[:12]) + (", ..." if len(missing) > 12 else "") + ".", ""]
    for dataset in grid.datasets:
        lines += _dataset_section(rows, points, grid, dataset, context)
        if curves is not None:
            lines += _curve_lines([c for c in curves if c.dataset == dataset], dataset)
    lines += ["## The paper's findings (quoted from Hsieh et al., 2023, not measured here)", ""]
    lines += [f"- {claim}" for claim in PAPER_CLAIMS]
    lines += ["", "These were obtained with T5 v1.1 students (220M-11B) on GPUs/TPUs. Numbers in the tables above "
              "come only from this repository's stages.", ""]
    return "\n".join(lines)


def _dataset_section(rows: list[dict[str, Any]], points: list[GridPoint], grid: GridConfig, dataset: str,
                     context: dict[str, Any]) -> list[str]:
    index = {(p.dataset, p.method, p.student, p.fraction): p for p in points}
    teacher_name = context.get("teacher_name", TEACHER)
    lines = [f"## {DATASET_TITLES.get(dataset, dataset)}", ""] + [f"- {f}" for f in _facts(dataset, context)] + [""]
    header = ["method", "student", "params (M)"] + [f"{pct(f)} (n={_n(index, dataset, grid, f)})" for f in grid.fractions]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in grid.methods:
        for student in grid.students:
            first = index.get((dataset, method, student, float(grid.fractions[0])))
            vals = [(_fmt(p) if (p := index.get((dataset, method, student, float(f)))) else "–") for f in grid.fractions]
            lines.append("| " + " | ".join([METHOD_TITLES.get(method, method), student,
                                            f"{first.params_m:g}" if first else "?"] + vals) + " |")
    teacher = next(r for r in rows if r["method"] == TEACHER and r["dataset"] == dataset)
    cell = f"{teacher['accuracy']:.1%}" + (f" ({teacher['exact_accuracy']:.1%})" if teacher.get("exact_accuracy") is not None else "")
    lines.append(f"| {METHOD_TITLES[TEACHER]} | {teacher_name} | – | " + " | ".join([cell] * len(grid.fractions)) + " |")
    lines += ["", *_claims(points, dataset, teacher_accuracy(rows)), "",
              f"![accuracy vs training fraction](plots/{dataset}_by_fraction.png)",
              f"![accuracy vs student size](plots/{dataset}_by_size.png)", ""]
    return lines


def _curve_lines(curves: list[Curve], dataset: str) -> list[str]:
    """Whether training had flattened: validation accuracy gained over the last quarter of the steps."""
    if not curves:
        return []
    steep = max(curves, key=lambda c: c.late_gain())
    rising = [c for c in curves if c.late_gain() > 0.01]
    return [f"Validation curves (mean over seeds): over the last quarter of training, accuracy rose by at most "
            f"{100 * steep.late_gain():+.1f} points ({METHOD_TITLES.get(steep.method, steep.method)}, {steep.student}, "
            f"{pct(steep.fraction)} of the data); {len(rising)} of {len(curves)} (method, student, fraction) points "
            "still gained more than 1 point, so "
            + ("those were still learning when training stopped." if rising else "every curve had flattened."), "",
            f"![validation accuracy during training](plots/{dataset}_valid_curves.png)", ""]


def _facts(dataset: str, context: dict[str, Any]) -> list[str]:
    facts = []
    split = context.get("splits", {}).get(dataset)
    if split:
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


def _claims(points: list[GridPoint], dataset: str, teacher: dict[str, float]) -> list[str]:
    mine = [p for p in points if p.dataset == dataset]
    lines = []
    wins, total, _ = step_by_step_wins(mine, dataset)
    if total:
        rivals = [name for m, name in RIVALS.items() if any(p.method == m for p in mine)]
        against = "both " + " and ".join(rivals) if len(rivals) == 2 else rivals[0]
        lines.append(f"- (a) step-by-step beats {against} at equal data at {wins} of {total} "
                     "(student, fraction) points (means over seeds).")
    for student, text in data_to_match_finetune(mine, dataset).items():
        lines.append(f"- (b) {student}: step-by-step reaches fine-tuning's largest-fraction accuracy with {text}.")
    lines.append("- (c) smallest data fraction and smallest student at which each method beats the teacher on the "
                 "same test examples:")
    verdicts = beats_teacher(mine, teacher).get(dataset, {})
    lines += [f"  - {METHOD_TITLES.get(m, m)}: {text}" for m, text in verdicts.items()]
    return lines


def _n(index: dict, dataset: str, grid: GridConfig, fraction: Any) -> str:
    for method in grid.methods:
        for student in grid.students:
            if p := index.get((dataset, method, student, float(fraction))):
                return str(p.n_train)
    return "?"


def _axes_style(ax: Any, dataset: str, teacher: float, teacher_name: str) -> None:
    """Teacher line, chance line, a 0-100% axis with percentages, light grid."""
    import matplotlib.ticker

    ax.axhline(teacher, color="black", linestyle="--", linewidth=1.2, label=f"{teacher_name} (teacher, few-shot CoT)")
    if dataset in CHANCE:
        ax.axhline(CHANCE[dataset], color="gray", linestyle=":", linewidth=1.2, label="chance")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.minorticks_off()
    ax.grid(alpha=0.3)


def plot_by_fraction(points: list[GridPoint], grid: GridConfig, dataset: str, teacher: float, teacher_name: str,
                     path: Path) -> Path:
    """Accuracy vs training fraction, a panel per student, seed spread shaded (mean ± std)."""
    import matplotlib.pyplot as plt

    students = sorted({p.student for p in points}, key=lambda s: min(p.params_m for p in points if p.student == s))
    fig, axes = plt.subplots(1, len(students), figsize=(5.2 * len(students), 4.6), sharey=True, squeeze=False)
    fractions = sorted({p.fraction for p in points})
    for ax, student in zip(axes[0], students):
        for method in grid.methods:
            ps = sorted((p for p in points if p.student == student and p.method == method), key=lambda p: p.fraction)
            if not ps:
                continue
            color, marker = METHOD_STYLE.get(method, ("gray", "x"))
            xs, ys = [p.fraction for p in ps], [p.mean for p in ps]
            ax.plot(xs, ys, marker=marker, color=color, label=METHOD_TITLES.get(method, method))
            if any(p.std is not None for p in ps):
                ax.fill_between(xs, [p.mean - (p.std or 0) for p in ps], [p.mean + (p.std or 0) for p in ps],
                                color=color, alpha=0.15, linewidth=0)
        _axes_style(ax, dataset, teacher, teacher_name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(fractions, [f"{pct(f)}\n(n={next(p.n_train for p in points if p.fraction == f)})" for f in fractions])
        ax.set_title(f"{student} ({next(p.params_m for p in points if p.student == student):g}M params)")
        ax.set_xlabel("training examples (fraction of the pool)")
    axes[0][0].set_ylabel("test accuracy (lenient)")
    _legend_below(fig, axes[0][0])
    fig.suptitle(f"{DATASET_TITLES.get(dataset, dataset)}: accuracy vs amount of training data" + _seed_note(grid))
    return _save(fig, path)


def plot_by_size(points: list[GridPoint], grid: GridConfig, dataset: str, teacher: float, teacher_name: str,
                 path: Path) -> Path:
    """Accuracy vs student size at the largest fraction, error bars = std over seeds."""
    import matplotlib.pyplot as plt

    largest = max(p.fraction for p in points)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for method in grid.methods:
        ps = sorted((p for p in points if p.method == method and p.fraction == largest), key=lambda p: p.params_m)
        if ps:
            color, marker = METHOD_STYLE.get(method, ("gray", "x"))
            ax.errorbar([p.params_m for p in ps], [p.mean for p in ps], yerr=[p.std or 0 for p in ps], marker=marker,
                        color=color, capsize=3, label=METHOD_TITLES.get(method, method))
    _axes_style(ax, dataset, teacher, teacher_name)
    ax.set_xscale("log")
    sizes = sorted({p.params_m for p in points})
    ax.set_xticks(sizes, [f"{s:g}M\n{next(p.student for p in points if p.params_m == s)}" for s in sizes])
    ax.minorticks_off()  # a log axis over a narrow range would label its minor ticks over the students' names
    ax.margins(x=0.08)
    ax.set_xlabel("student size (parameters)")
    ax.set_ylabel("test accuracy (lenient)")
    ax.set_title(f"{DATASET_TITLES.get(dataset, dataset)}: accuracy vs student size ({pct(largest)} of the data)"
                 + _seed_note(grid), fontsize=10)
    _legend_below(fig, ax)
    return _save(fig, path)


def plot_curves(curves: list[Curve], grid: GridConfig, dataset: str, path: Path) -> Path:
    """Validation accuracy vs training step, a panel per student: the largest fraction solid, the smallest dashed."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    students = [s for s in grid.students if any(c.student == s for c in curves)]
    fig, axes = plt.subplots(1, len(students), figsize=(5.2 * len(students), 4.6), sharey=True, squeeze=False)
    shown = sorted({min(c.fraction for c in curves), max(c.fraction for c in curves)}, reverse=True)
    for ax, student in zip(axes[0], students):
        for method in grid.methods:
            color, marker = METHOD_STYLE.get(method, ("gray", "x"))
            for fraction, style in zip(shown, ("-", "--")):
                c = next((c for c in curves if (c.student, c.method, c.fraction) == (student, method, fraction)), None)
                if c:
                    ax.plot(c.steps, c.accuracies, style, marker=marker, markersize=3, color=color,
                            label=f"{METHOD_TITLES.get(method, method)}, {pct(fraction)} of the data")
        if dataset in CHANCE:
            ax.axhline(CHANCE[dataset], color="gray", linestyle=":", linewidth=1.2, label="chance")
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.set_title(student)
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("validation accuracy (lenient)")
    _legend_below(fig, axes[0][0])
    fig.suptitle(f"{DATASET_TITLES.get(dataset, dataset)}: validation accuracy during training" + _seed_note(grid))
    return _save(fig, path)


def _legend_below(fig: Any, ax: Any) -> None:
    # Below the axes, so no point near chance level or the teacher line is hidden.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: the bytes depend on the data only
    plt.close(fig)
    return path


def _seed_note(grid: GridConfig) -> str:
    return f"\nmean ± std over {len(grid.seeds)} seeds" if len(grid.seeds) > 1 else "\n(1 seed: no spread)"


def teacher_name(teacher: TeacherConfig) -> str:
    """How reports name the teacher: the recorded PaLM, or the live teacher's model."""
    if teacher.name == "palm":
        return "PaLM 540B"
    block = getattr(teacher, teacher.name) or {}
    return str(block.get("model") or teacher.name)


def build_report(settings: Settings, results_root: str | Path, reports_root: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write results.csv, results.md and the plots under ``out_dir``; returns a small summary.

    Reads ``<reports_root>/baseline.json``, ``<reports_root>/corpus/<dataset>.json`` and
    ``<reports_root>/splits/<dataset>.json`` beside the per-cell metrics under ``results_root``."""
    import matplotlib

    matplotlib.use("Agg")
    grid, reports_root, out_dir = settings.grid, Path(reports_root), Path(out_dir)
    name = teacher_name(settings.teacher)
    baseline = read_json(reports_root / "baseline.json")
    rows = collect_rows(results_root, grid, baseline, name)
    write_csv(rows, out_dir / "results.csv")
    context: dict[str, Any] = {"teacher_name": name, "baseline": baseline, "splits": {}, "notes": {},
                               "missing": missing_cells(results_root, grid)}
    for dataset in grid.datasets:
        context["splits"][dataset] = read_json(reports_root / "splits" / f"{dataset}.json")
        if "note" in (info := read_json(reports_root / "corpus" / f"{dataset}.json")):
            context["notes"][dataset] = info["note"]
    curves = collect_curves(results_root, grid)
    with atomic_open(out_dir / "results.md") as fh:
        fh.write(markdown(rows, grid, context, curves))
    points, teacher, plots = aggregate(rows), teacher_accuracy(rows), []
    for dataset in grid.datasets:
        mine = [p for p in points if p.dataset == dataset]
        plots.append(plot_by_fraction(mine, grid, dataset, teacher[dataset], name, out_dir / "plots" / f"{dataset}_by_fraction.png"))
        plots.append(plot_by_size(mine, grid, dataset, teacher[dataset], name, out_dir / "plots" / f"{dataset}_by_size.png"))
        plots.append(plot_curves([c for c in curves if c.dataset == dataset], grid, dataset,
                                 out_dir / "plots" / f"{dataset}_valid_curves.png"))
    return {"grid_points": len(points), "rows": len(rows), "plots": [str(p) for p in plots]}
