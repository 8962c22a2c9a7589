"""The registries of methods and datasets, and the ones defined outside the package: modules named in
``DSS_PLUGINS`` (comma-separated) are imported once, the first time a registry is read, and register
themselves (``methods.registry.register``, ``data.datasets.register``). Set the variable for every process
that runs a stage (``dvc repro`` passes it on)."""

from __future__ import annotations

import importlib
import os
from typing import Generic, TypeVar

T = TypeVar("T")

_loaded = False


def load_plugins() -> None:
    """Import the modules named in ``DSS_PLUGINS`` (once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for name in filter(None, (m.strip() for m in os.environ.get("DSS_PLUGINS", "").split(","))):
            importlib.import_module(name)


class Registry(Generic[T]):
    """Named things of one kind (methods, datasets), in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, item: T) -> T:
        """Register ``item`` under its new ``name`` (registering the same thing again changes nothing)."""
        name = item.name  # type: ignore[attr-defined]
        if name in self._items and self._items[name] != item:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = item
        return item

    def all(self) -> dict[str, T]:
        """Everything registered, plugins included."""
        load_plugins()
        return self._items

    def get(self, name: str) -> T:
        """One by name; an unknown name lists the known ones."""
        try:
            return self.all()[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._items)}") from None
