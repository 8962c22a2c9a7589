"""Collapsed cells: a cell whose student stopped telling its inputs apart, found from its test predictions.

A cell is flagged when

* one answer is ``ONE_ANSWER`` (95%) or more of its test predictions (a constant predictor), or
* its test accuracy is not above chance (the dataset's spec: ``DatasetSpec.chance``) or the majority class's
  rate on its test set (label-set datasets only: ``classes.py``): the 95% interval of its accuracy (a bootstrap
  over the test examples, :mod:`.intervals`) reaches down to that rate, so it contains it or lies below it.

The report keeps flagged cells in every mean, interval and comparison and says so beside each number that
holds one (dropping them would pair fewer seeds and move the mean towards the seeds that learned, so a method
that collapses at a setting would look better than it is there). ``grid status`` lists them too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.datasets import get_spec
from ..data.scoring import normalise_text
from ..jsonio import read_json
from ..train.cell import METRICS_FILE, PREDICTIONS_FILE, Cell
from .classes import OTHER, as_class, class_labels
from .intervals import Bootstrap
from .reading import Answers, GridResults, read_predictions

ONE_ANSWER = 0.95  # a cell with one answer for at least this share of its test examples is flagged
NO_ANSWER = "(none)"  # how a prediction that is nothing readable is counted


@dataclass(frozen=True)
class CellCheck:
    """What the flags of one cell are read from, and its reasons (empty: not collapsed)."""

    top_answer: str
    top_share: float
    accuracy: float
    low: float
    high: float
    chance: float | None
    majority: float | None
    reasons: tuple[str, ...]

    @property
    def collapsed(self) -> bool:
        return bool(self.reasons)


def top_answer(dataset: str, answers: Answers) -> tuple[str, float]:
    """The commonest prediction (a label where the dataset has a label set, else the re-spaced text) and its share."""
    labels = class_labels(dataset)
    seen = Counter(NO_ANSWER if p is None else as_class(p, labels) if labels else normalise_text(p)
                   for p in answers.predictions)
    answer, count = seen.most_common(1)[0] if seen else (NO_ANSWER, 0)
    return answer, count / max(len(answers.predictions), 1)


def majority_rate(dataset: str, answers: Answers) -> float | None:
    """The share of the test set's commonest gold label (None where the dataset has no label set)."""
    labels = class_labels(dataset)
    if labels is None or not answers.golds:
        return None
    return Counter(as_class(g, labels) for g in answers.golds).most_common(1)[0][1] / len(answers.golds)


def check_cell(dataset: str, answers: Answers, correct: np.ndarray, boot: Bootstrap) -> CellCheck:
    """One cell's flags, from its test predictions and correctness."""
    answer, share = top_answer(dataset, answers)
    iv = boot.accuracy(np.asarray(correct, np.float32)[None, :])
    chance, majority = get_spec(dataset).chance, majority_rate(dataset, answers)
    reasons = []
    if share >= ONE_ANSWER:
        shown = answer if answer in (NO_ANSWER, OTHER) else repr(answer)
        reasons.append(f"one answer, {shown}, for {share:.1%} of the test examples")
    reached = [f"{what} ({rate:.1%})" for what, rate in (("chance", chance), ("the majority class's rate", majority))
               if rate is not None and iv.low <= rate]
    if reached:
        reasons.append(f"accuracy {iv.estimate:.1%} (95%: {iv.low:.1%} to {iv.high:.1%}) not above "
                       + " or ".join(reached))
    return CellCheck(answer, share, iv.estimate, iv.low, iv.high, chance, majority, tuple(reasons))


def collapse_table(res: GridResults, boots: dict[str, Bootstrap]) -> pd.DataFrame:
    """A row per finished cell: its commonest answer and share, its accuracy's interval, chance and the
    majority rate, whether it is ``collapsed`` and why (``reasons``, joined with '; ')."""
    rows = []
    for key in sorted(k for k in res.correct if k in res.answers):
        c = check_cell(key[0], res.answers[key], res.correct[key], boots[key[0]])
        rows.append({"dataset": key[0], "method": key[1], "student": key[2], "fraction": key[3], "seed": key[4],
                     "top_answer": c.top_answer, "top_share": round(c.top_share, 6), "low": c.low, "high": c.high,
                     "chance": c.chance, "majority": c.majority, "collapsed": c.collapsed,
                     "reasons": "; ".join(c.reasons)})
    columns = ["dataset", "method", "student", "fraction", "seed", "top_answer", "top_share", "low", "high", "chance",
               "majority", "collapsed", "reasons"]
    return pd.DataFrame(rows, columns=columns).astype({"seed": "Int64", "collapsed": bool})


def collapsed_cells(results_root: str | Path, cells: list[Cell]) -> dict[Cell, tuple[str, ...]]:
    """The cells among ``cells`` whose results are under ``results_root`` and are flagged, with their reasons
    (what ``grid status`` lists)."""
    boots: dict[int, Bootstrap] = {}
    out = {}
    for cell in cells:
        folder = cell.results_dir(results_root)
        if not (folder / METRICS_FILE).is_file() or not (folder / PREDICTIONS_FILE).is_file():
            continue
        n = int(read_json(folder / METRICS_FILE)["n"])
        correct, answers = read_predictions(folder / PREDICTIONS_FILE, n)
        if n not in boots:
            boots[n] = Bootstrap(n)
        check = check_cell(cell.dataset, answers, correct, boots[n])
        if check.collapsed:
            out[cell] = check.reasons
    return out
