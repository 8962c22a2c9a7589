"""How reports name and draw methods and datasets: titles, plot colours and markers, the short tags of the
DVC metrics, and the rival's name in the paper's claim (a).

This lives with the report, not with the methods and datasets: the training stages never import it, so
editing a title or a colour reruns the ``report`` stages only and leaves every trained cell current. A method
or dataset without an entry here (a plugin's, a variant of a method) is shown under its own name, in a colour
the entries leave free.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodLook:
    """How reports show one method."""

    title: str  # its name in tables, claims and legends
    tag: str  # its short name in the DVC metrics (`dvc exp show` columns)
    color: str = "gray"  # a matplotlib colour
    marker: str = "x"  # a matplotlib marker
    compared_as: str | None = None  # the rival's name in claim (a), if step-by-step is compared with it there


METHOD_LOOKS: dict[str, MethodLook] = {
    "finetune": MethodLook("standard fine-tuning", "ft", "tab:blue", "o", "fine-tuning"),
    "distill": MethodLook("standard distillation", "kd", "tab:orange", "s", "distillation"),
    "step_by_step": MethodLook("distilling step-by-step", "sbs", "tab:green", "^"),
    "single_task": MethodLook("single-task (rationale+label)", "st", "tab:purple", "D"),
}

DATASET_TITLES: dict[str, str] = {"cqa": "CommonsenseQA", "svamp": "SVAMP", "esnli": "e-SNLI", "anli1": "ANLI-R1"}


OTHER_COLORS = ("tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "gray")  # for methods without an entry
OTHER_MARKERS = ("v", "P", "*", "X", "<", ">")


def method_look(name: str) -> MethodLook:
    """How reports show the method ``name``: its entry, or its own name in a colour and marker picked by
    the name (the same in every report)."""
    if name in METHOD_LOOKS:
        return METHOD_LOOKS[name]
    pick = zlib.crc32(name.encode("utf-8"))
    return MethodLook(name, name, OTHER_COLORS[pick % len(OTHER_COLORS)], OTHER_MARKERS[pick // 7 % len(OTHER_MARKERS)])


def dataset_title(name: str) -> str:
    """How reports name the dataset ``name``."""
    return DATASET_TITLES.get(name, name)


def register_look(name: str, look: MethodLook) -> None:
    """Show a method (a plugin's: ``DSS_PLUGINS``) this way in reports."""
    METHOD_LOOKS[name] = look


def register_dataset_title(name: str, title: str) -> None:
    """Name a dataset (a plugin's) this way in reports."""
    DATASET_TITLES[name] = title


def pct(fraction: float | str) -> str:
    """A data fraction as a percentage: 0.125 -> '12.5%'."""
    return f"{100 * float(fraction):.4g}%"
