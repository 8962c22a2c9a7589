"""Reading ``params.yaml`` (the single source of every setting DVC tracks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import DataError


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Load the params file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise DataError("params file not found", path=str(path))
    with path.open(encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise DataError("params file must be a mapping", path=str(path))
    return params


def get(params: dict[str, Any], dotted: str, default: Any = ...) -> Any:
    """``get(params, "split.valid_size")``; a missing key without a default names the key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise KeyError(f"params.yaml has no {dotted!r}")
            return default
        node = node[part]
    return node
