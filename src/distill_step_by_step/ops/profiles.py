"""Profiles: named sets of ``params.yaml`` overrides, run as DVC experiments.

``python -m distill_step_by_step.profiles run smoke`` runs ``dvc exp run -S key=value ...`` with the
overrides in ``profiles/smoke.yaml`` (extra arguments, e.g. ``--queue``, go to ``dvc exp run``);
``show`` prints the overrides. ``params.yaml`` as committed is the embedded default profile.

A profile run this way is an experiment of the repository's own pipeline (``dvc exp show`` lists it; it
is not kept on main). A profile whose results are kept in the repository is a grid with its own pipeline
(``ops/grid.py``: ``python -m distill_step_by_step.grid init <profile>``), built by workers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ..settings import parse_settings, read_params

PROFILE_DIR = Path("profiles")


def load_profile(name: str) -> dict[str, Any]:
    """A profile by name (``profiles/<name>.yaml``) or by path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))) if PROFILE_DIR.is_dir() else "none"
        raise SystemExit(f"no profile {name!r} ({path} not found; known: {known})")
    return yaml.safe_load(path.read_text()) or {}


def apply_profile(params: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the profile's values merged in (mappings merged key by key, anything else replaced):
    what ``dvc exp run`` with the profile's overrides makes of params.yaml."""
    out = dict(params)
    for key, value in profile.items():
        base = out.get(key)
        out[key] = apply_profile(base, value) if isinstance(value, dict) and isinstance(base, dict) else value
    return out


def _value(v: Any) -> str:
    # Hydra override grammar, which `dvc exp run -S` parses: JSON-like lists/dicts, quoted strings.
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot express {v!r} as an override")


def overrides(profile: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """``key=value`` overrides turning ``params`` into ``params`` + ``profile`` (``+key`` for new keys)."""
    out: list[str] = []

    def walk(node: dict[str, Any], base: dict[str, Any] | None, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            exists = isinstance(base, dict) and key in base
            if isinstance(value, dict) and exists and isinstance(base[key], dict):
                walk(value, base[key], path + ".")
            else:
                out.append(("" if exists else "+") + f"{path}={_value(value)}")

    walk(profile, params, "")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m distill_step_by_step.profiles", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["show", "run"])
    ap.add_argument("profile", help="name in profiles/ (smoke, paper) or a path to a YAML file")
    ap.add_argument("--params", default="params.yaml")
    args, extra = ap.parse_known_args(argv)
    params, profile = read_params(args.params), load_profile(args.profile)
    parse_settings(apply_profile(params, profile), f"{args.params} with profile {args.profile}")  # fail before DVC runs
    sets = overrides(profile, params)
    if args.action == "show":
        print("\n".join(sets))
        return
    cmd = ["dvc", "exp", "run"]
    for s in sets:
        cmd += ["-S", s]
    cmd += extra  # after the profile's: an override given here wins
    print("+ " + " ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
