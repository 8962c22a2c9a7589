"""The registries of methods and datasets, and the ones defined outside the package: modules named in
``DSS_PLUGINS`` (comma-separated) are imported once, the first time a registry is read, and register
themselves (``data.datasets.register``, ``report.presentation.register_look``; a method is a file of
``methods/``, a DVC dep of its cells). Set the variable for every process
that runs a stage (``dvc repro`` passes it on). A registry of one file per thing (the methods) imports every
module of its package the first time it is read."""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterable
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
    """Named things of one kind (methods, datasets), in registration order (by name for a package's modules)."""

    def __init__(self, kind: str, package: str | None = None, skip: Iterable[str] = ()):
        self.kind = kind
        self._items: dict[str, T] = {}
        # a package whose every module (but ``skip``) registers one thing: imported on the first read
        self._package, self._skip, self._found = package, frozenset(skip), package is None

    def register(self, item: T) -> T:
        """Register ``item`` under its new ``name`` (registering the same thing again changes nothing)."""
        name = item.name  # type: ignore[attr-defined]
        if name in self._items and self._items[name] != item:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = item
        return item

    def all(self) -> dict[str, T]:
        """Everything registered, plugins included (by name where each is a module of a package)."""
        load_plugins()
        if not self._found:
            self._found = True
            for module in package_modules(self._package, self._skip):
                importlib.import_module(module)
            self._items = dict(sorted(self._items.items()))
        return self._items

    def get(self, name: str) -> T:
        """One by name; an unknown name lists the known ones."""
        try:
            return self.all()[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._items)}") from None


def package_modules(package: str, skip: Iterable[str] = ()) -> list[str]:
    """The dotted names of a package's modules, but ``skip``, sorted."""
    path = importlib.import_module(package).__path__
    return sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(path) if m.name not in set(skip))
