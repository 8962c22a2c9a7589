"""How a settings group is declared and checked: dataclass fields carrying their allowed range
(:func:`setting`), parsed from a ``params.yaml`` mapping by :func:`parse` with every problem named by its key
path (:class:`SettingsError`). ``settings.py`` declares the pipeline's groups with it; each method declares
its own tunables with it (``methods/``)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting that is unknown, of the wrong type or out of range; the message names its key path."""

    def __init__(self, path: str, message: str, source: str = "params.yaml"):
        super().__init__(f"{source}: {path}: {message}")
        self.path, self.message = path, message


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with its allowed range (``ge``/``gt``/``le``) or values (``choices``)."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("choices", choices)) if v is not None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)



def parse(cls: type[T], raw: Any, path: str) -> T:
    """Build dataclass ``cls`` from a mapping: unknown keys, missing keys, types and ranges are errors."""
    raw = as_mapping(raw, path)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SettingsError(f"{path}.{unknown[0]}", f"unknown setting; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{path}.{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SettingsError(key, "missing")
            continue
        values[name] = _check_range(typed_value(raw[name], hints[name], key), f.metadata, key)
    try:
        obj = cls(**values)
    except ValueError as exc:  # a dataclass's own cross-field check
        raise SettingsError(path, str(exc)) from None
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def as_mapping(raw: Any, path: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SettingsError(path, f"should be a mapping of settings, got {type(raw).__name__} {raw!r}")
    return raw


def typed_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against a type hint (int, float, str, bool, X | None, list[X], dict[str, Any])."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return typed_value(value, next(a for a in args if a is not type(None)), key)
    if origin is list:
        if not isinstance(value, list):
            raise SettingsError(key, f"should be a list, got {shown(value)}")
        return [typed_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise SettingsError(key, f"should be a mapping, got {shown(value)}")
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no point) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(key, f"should be a finite number, got {value}")
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SettingsError(key, f"should be {_type_name(hint)}, got {shown(value)}")
    return value


def _check_range(value: Any, meta: typing.Mapping[str, Any], key: str) -> Any:
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_range(v, meta, f"{key}[{i}]")
        return value
    if value is None:
        return value
    if "choices" in meta and value not in meta["choices"]:
        raise SettingsError(key, f"must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
    for op, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                         ("le", lambda v, b: v <= b, "<=")):
        if op in meta and not ok(value, meta[op]):
            raise SettingsError(key, f"must be {word} {meta[op]:g}, got {value!r}")
    return value


def _type_name(hint: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 60 else text[:57] + '...'}"
