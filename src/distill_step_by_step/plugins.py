"""Methods and datasets defined outside the package: modules named in ``DSS_PLUGINS`` (comma-separated) are
imported once, the first time a registry is read, and register themselves (``methods.register``,
``datasets.register``). Set the variable for every process that runs a stage (``dvc repro`` passes it on)."""

from __future__ import annotations

import importlib
import os

_loaded = False


def load_plugins() -> None:
    """Import the modules named in ``DSS_PLUGINS`` (once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for name in filter(None, (m.strip() for m in os.environ.get("DSS_PLUGINS", "").split(","))):
            importlib.import_module(name)
