"""A grid's headline table for the README: one student on one dataset, a row per fraction with each method's
accuracy and step-by-step's paired comparisons (claims (a), (b) and (c)), rendered from the report's committed
``results.csv`` and ``comparisons.csv``. ``python -m distill_step_by_step.grid headline <profile>`` prints it;
``tests/test_layout.py`` checks that the README's copy is what the committed report gives."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .presentation import METHOD_LOOKS
from .reading import TEACHER
from .report import SBS


def _points(diff: pd.Series) -> str:
    return (f"{100 * diff.difference:+.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}], {diff.verdict}"
            f" ({diff.seeds} seed{'s' if diff.seeds != 1 else ''})")


def headline_table(reports: str | Path, dataset: str, student: str) -> str:
    """The Markdown table of ``student`` on ``dataset`` from a report folder (``reports/<profile>/``)."""
    results = pd.read_csv(Path(reports) / "results.csv")
    comparisons = pd.read_csv(Path(reports) / "comparisons.csv")
    cells = results[(results.dataset == dataset) & (results.student == student)]
    comps = comparisons[(comparisons.dataset == dataset) & (comparisons.student == student)
                        & (comparisons.method == SBS)]
    teacher = results.loc[results.dataset == dataset, "teacher_accuracy"]
    present = set(results.method)
    rivals = [m for m, look in METHOD_LOOKS.items() if look.compared_as and m in present]  # claim (a)'s, as the report
    names = {**{m: METHOD_LOOKS[m].compared_as for m in rivals}, SBS: "step-by-step"}
    methods = [*rivals, SBS] if SBS in present else rivals
    top = comps.loc[(comps.against == "finetune") & (comps.against_fraction != comps.fraction), "against_fraction"]
    head = ["fraction of the pool (examples)", *(names[m] for m in methods),
            *(f"(a) step-by-step - {names[r]}" for r in rivals)]
    if len(top):
        head.append(f"(b) step-by-step - fine-tuning with {100 * top.iloc[0]:g}%")
    head.append(f"(c) step-by-step - PaLM 540B ({100 * teacher.iloc[0]:.1f}%)" if len(teacher) else
                "(c) step-by-step - teacher")
    rows = []
    for fraction in sorted(set(results.fraction)):
        here = cells[cells.fraction == fraction]
        n_train = here.n_train.iloc[0] if len(here) else None
        row = [f"{100 * fraction:g}%" + (f" ({n_train:,})" if n_train is not None else "")]
        for method in methods:
            done = here[here.method == method]
            row.append(f"{100 * done.point_accuracy.iloc[0]:.1f}% ({len(done)} seed{'s' if len(done) != 1 else ''})"
                       if len(done) else "-")
        at = comps[comps.fraction == fraction]
        picks = [at[(at.against == r) & (at.against_fraction == fraction)] for r in rivals]
        if len(top):
            picks.append(at[(at.against == "finetune") & (at.against_fraction == top.iloc[0])])
        picks.append(at[at.against == TEACHER])
        row += [_points(p.iloc[0]) if len(p) else "-" for p in picks]
        rows.append(row)
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(row) + " |" for row in rows)])
