"""The registry of training methods, and what the rest of the package calls: each function asks the method
named by the settings it is given.

Every module of this package registers its method when imported, and the registry imports them all the
first time it is read: adding a method is one new file here (and its ``methods.<name>`` block in
``params.yaml``); a cell's DVC deps name its method's file (``code_closure.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..plugins import Registry
from ..schema import SettingsError, as_mapping, parse
from .method import Method, MethodSettings, R, RowStats, TextExample, Units

if TYPE_CHECKING:
    import torch

METHODS: Registry[Method] = Registry("method", package=__package__, skip=("method", "registry"))
METHODS_KEY = "methods"  # params.yaml's group of method settings
register = METHODS.register  # add a method (its name must be new)
registry = METHODS.all  # every registered method by name, plugins included
get_method = METHODS.get  # a method by name; an unknown name lists the known ones


def method_settings(name: str, raw: dict[str, Any] | None) -> MethodSettings:
    """``methods.<name>`` of params.yaml, checked against the method's own settings class; every problem
    raises a :class:`SettingsError` naming its key path.

    A block with ``extends: <method>`` is a *variant*: a name of its own for a registered method with other
    settings (``step_by_step_a03: {extends: step_by_step, alpha: 0.3}``). It starts from that method's
    defaults, not from its block, so that its cells depend on their own block alone."""
    path = f"{METHODS_KEY}.{name}"
    raw = dict(as_mapping(raw, path))
    variant = None
    if "extends" in raw:
        base = raw.pop("extends")
        if name in registry():
            raise SettingsError(f"{path}.extends", f"{name} is a method of its own; a variant needs a new name")
        if not isinstance(base, str) or base not in registry():
            raise SettingsError(f"{path}.extends", f"must be one of {', '.join(registry())}; got {base!r}")
        name, variant = base, name
    try:
        method = get_method(name)
    except ValueError as exc:
        raise SettingsError(path, f"{exc}; a variant of one names it with `extends:`") from None
    unknown = sorted(set(raw) - set(method.tunables))
    if unknown:
        raise SettingsError(f"{path}.{unknown[0]}", f"unknown setting; {name} takes "
                            + (", ".join(method.tunables) if method.tunables else "no settings"))
    return parse(method.Settings, {"name": name, **raw, **method.fixed, "variant": variant}, path)


def recorded_settings(record: Mapping[str, Any]) -> MethodSettings:
    """A method's settings from its record in a checkpoint (``method_config``), checked as params would be."""
    method = get_method(record["name"])
    tunables = {k: v for k, v in record.items() if k in method.tunables}
    if record.get("variant"):
        return method_settings(record["variant"], {"extends": method.name, **tunables})
    return method_settings(method.name, tunables)


def predict_source(record: dict[str, Any], cfg: MethodSettings, separator: str | None) -> str:
    """The text the student sees when asked for a label (also at test time)."""
    return get_method(cfg.name).predict_source(record, separator)


def label_from_output(cfg: MethodSettings, text: str) -> str:
    """The label in a decoded output."""
    return get_method(cfg.name).read_label(text)


def training_examples(records: list[dict[str, Any]], cfg: MethodSettings, separator: str | None, seed: int = 0,
                      answer_type: str = "choice") -> tuple[list[TextExample], RowStats]:
    """Text examples for the method of ``cfg`` from corpus records, with counts of what was dropped and why
    (``seed`` draws, and ``answer_type`` judges, where a method's settings choose among the rationales)."""
    return get_method(cfg.name).examples(records, cfg, separator, seed, answer_type)


def task_units(cfg: MethodSettings, batch: Sequence[int], label_rows: Sequence[R], rationale_rows: Mapping[int, R],
               grad_accum: int = 1, step: int = 0) -> Units:
    """The task sub-batches of one micro-batch (at optimizer step ``step``) and their loss weights."""
    return get_method(cfg.name).units(cfg, step, batch, label_rows, rationale_rows, grad_accum)


def task_loss(cfg: MethodSettings) -> Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]:
    """The method's loss of one task sub-batch, as ``loss(logits, targets)``."""
    method = get_method(cfg.name)
    return lambda logits, targets: method.loss(cfg, logits, targets)


def weighted_loss(losses: Sequence["torch.Tensor"], weights: Sequence[float]) -> "torch.Tensor":
    """``alpha * L_label + (1 - alpha) * L_rationale`` (or ``L_label`` alone): the loss one micro-batch back-propagates."""
    total = weights[0] * losses[0]
    for weight, loss in zip(weights[1:], losses[1:]):
        total = total + weight * loss
    return total
