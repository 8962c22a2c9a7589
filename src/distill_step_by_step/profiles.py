"""Profiles: named sets of ``params.yaml`` overrides, run as DVC experiments.

``python -m distill_step_by_step.profiles run smoke`` runs ``dvc exp run -S key=value ...`` with the
overrides in ``profiles/smoke.yaml`` (extra arguments, e.g. ``--queue``, go to ``dvc exp run``);
``show`` prints the overrides. ``params.yaml`` as committed is the embedded default profile.

``run <profile> --jobs N`` runs the grid N cells at a time: it runs the data stages once (a temporary
experiment up to ``baseline``), queues one DVC experiment per (dataset, method, student) slice of the grid, runs the queue with ``dvc queue start -j N`` (with
``DSS_GPUS``/``DSS_JOBS_PER_GPU`` set, several of them share a GPU: see ``gpu.py``), then runs the whole
profile in the workspace, where every cell a slice trained is restored from DVC's run-cache instead of
trained again. A slice that failed stops the run before that last step; running the same command again
reuses every cell that finished.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .settings import parse_settings, read_params

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


def grid_slices(grid: dict[str, Any]) -> list[dict[str, list[Any]]]:
    """The (dataset, method, student) slices of a grid, as ``grid`` overrides. Fractions and seeds stay whole
    in every slice: the ``split`` stage depends on them, and must be the same stage in every slice."""
    return [{"datasets": [d], "methods": [m], "students": [s]}
            for d in grid["datasets"] for m in grid["methods"] for s in grid["students"]]


def _dvc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dvc", *args], capture_output=True, text=True)


def queue_states() -> dict[str, int]:
    """How many of the queue's experiments are in each state (``Queued``, ``Running``, ``Success``, ``Failed``)."""
    states: dict[str, int] = {}
    for line in _dvc("queue", "status").stdout.splitlines():
        words = line.split()
        if words and words[-1] in ("Queued", "Running", "Success", "Failed"):
            states[words[-1]] = states.get(words[-1], 0) + 1
    return states


def run_in_slices(profile: dict[str, Any], params: dict[str, Any], jobs: int, poll_seconds: float = 5.0) -> int:
    """Queue the grid's slices, run them ``jobs`` at a time, then the whole grid (from the run-cache)."""
    if any(queue_states().get(state) for state in ("Queued", "Running")):
        raise SystemExit("the DVC queue is busy (`dvc queue status`): wait for it or `dvc queue kill` it first")
    merged = apply_profile(params, profile)
    local: dict[str, Any] = {}
    source = str(merged["data"]["source"])
    if not source.startswith(("http://", "https://")):
        # queued experiments run in a temporary copy of the repository, where ../shared/... points nowhere
        local = {"data": {"source": str(Path(source).resolve())}}
    slices = grid_slices(merged["grid"])
    # The data stages are the same stage in every slice: run them once first, so the slices restore them
    # from the run-cache (slices that run one stage at the same moment race to save its run-cache entry).
    shared = ["dvc", "exp", "run", "--temp", *[a for s in overrides(apply_profile(profile, local), params)
                                             for a in ("-S", s)], "baseline"]
    print("+ " + " ".join(shared), flush=True)
    if subprocess.call(shared) != 0:
        raise SystemExit("the data stages failed (see above)")
    failed_before = queue_states().get("Failed", 0)
    for grid in slices:
        sets = overrides(apply_profile(profile, {**local, "grid": grid}), params)
        cmd = ["dvc", "exp", "run", "--queue", *[a for s in sets for a in ("-S", s)]]
        if subprocess.call(cmd, stdout=subprocess.DEVNULL) != 0:
            raise SystemExit(f"could not queue: {' '.join(cmd)}")
    print(f"+ dvc queue start -j {jobs}  ({len(slices)} slices of the grid)", flush=True)
    if subprocess.call(["dvc", "queue", "start", "-j", str(jobs)]) != 0:
        raise SystemExit("dvc queue start failed")
    while (states := queue_states()) and (states.get("Queued") or states.get("Running")):
        print(f"  queue: {states}", flush=True)
        time.sleep(poll_seconds)
    if (failed := queue_states().get("Failed", 0) - failed_before) > 0:
        print(f"{failed} of {len(slices)} slices failed (`dvc queue status`, `dvc queue logs <name>`); the cells "
              "that finished are in the run-cache: fix the cause and run the same command again", file=sys.stderr)
        return 1
    cmd = ["dvc", "exp", "run", *[a for s in overrides(profile, params) for a in ("-S", s)]]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m distill_step_by_step.profiles", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["show", "run"])
    ap.add_argument("profile", help="name in profiles/ (smoke, paper) or a path to a YAML file")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--jobs", type=int, default=1, help="cells at a time: >1 runs the grid in queued slices")
    args, extra = ap.parse_known_args(argv)
    params, profile = read_params(args.params), load_profile(args.profile)
    parse_settings(apply_profile(params, profile), f"{args.params} with profile {args.profile}")  # fail before DVC runs
    sets = overrides(profile, params)
    if args.action == "show":
        print("\n".join(sets))
        return
    if args.jobs > 1:
        if extra:
            raise SystemExit(f"--jobs runs its own dvc commands; extra arguments are not passed on: {' '.join(extra)}")
        sys.exit(run_in_slices(profile, params, args.jobs))
    cmd = ["dvc", "exp", "run", *extra]
    for s in sets:
        cmd += ["-S", s]
    print("+ " + " ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
