"""Where a grid's cells are kept, and the checks that lose none of them.

A grid's cells live in three places: a worker's clone (its ``dvc.lock`` and DVC cache), the DVC remote the
workers share, and the repository's ``store`` remote (``store/``, git-tracked). This module holds what
moves cells between them without loss:

* :func:`resolve_remote`: a remote folder is resolved once, where the command was given, and must be there
  (a folder that DVC has written to, or one marked by ``--create-remote``): a missing, moved or unmounted
  folder is refused, never silently recreated (DVC would make a new empty one and split the cells).
* :func:`push_cells`: a push with retries; a push that still fails gives DVC's own reason.
* :func:`adopt_cells`: cells finished in the remote by any version of the code are recorded in this
  pipeline's lock from their run-cache entries, when their settings and data are this grid's. DVC restores
  a run-cache entry only when every dependency, code included, is unchanged; a worker or an assembly at a
  newer commit would otherwise train again, or miss, a cell an older worker finished. The lock keeps the
  code such a cell ran with, so ``grid status`` counts it as made by older code.
* :func:`verify_store`: every ``store/`` object a cell needs is checked against its name (its md5) before
  DVC reads it, because DVC deletes an object that fails its check; a damaged or missing object stops the
  command with one line that names the cell and its file, and nothing is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..errors import StageError

MARK = "DSS-GRID-REMOTE"  # written by --create-remote into a new remote folder: it is there, and meant to be
CODE_PREFIXES = ("src/", "stages/")  # a run-cache entry's code deps: a cell made by older code is still the cell
PUSH_TRIES = 3
_IDENTITY: dict[str, tuple[int, int]] = {}  # a local remote's folder as first seen: (device, inode)
PUSH_BACKOFF = 5.0  # seconds before the second try, doubled before each later one (DSS_PUSH_BACKOFF overrides)


def is_local(url: str) -> bool:
    """Whether a DVC remote URL is a folder on this machine (a plain path or ``file://``)."""
    return "://" not in url or url.startswith("file://")


def _folder(url: str) -> Path:
    return Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()


def remote_is_there(url: str) -> bool:
    """A local remote is there when its folder holds DVC's objects or run-cache, or the mark of
    ``--create-remote``: an empty folder is what an unmounted share looks like. Other URLs: DVC checks them."""
    if not is_local(url):
        return True
    path = _folder(url)
    return path.is_dir() and any((path / name).exists() for name in (MARK, "files", "runs"))


def resolve_remote(url: str, create: bool = False) -> str:
    """The remote as every later command uses it: a local folder made absolute here (relative to where the
    command was given), checked to be there; with ``create``, a missing or empty folder is made a remote."""
    if not is_local(url):
        return url
    path = _folder(url).resolve()
    if not remote_is_there(str(path)) and create:
        path.mkdir(parents=True, exist_ok=True)
        (path / MARK).write_text("a DVC remote of a distill-step-by-step grid (made by --create-remote)\n")
    if remote_is_there(str(path)):
        stat = path.stat()
        _IDENTITY[str(path)] = (stat.st_dev, stat.st_ino)
        return str(path)
    what = "is empty (an unmounted share?)" if path.is_dir() else "does not exist"
    raise StageError(f"remote {path} {what}: refusing to start a new one silently; if a new remote is meant, "
                     "add --create-remote")


def require_remote(url: str) -> None:
    """Stop when a remote that was there has gone (moved, deleted, unmounted) since the command started, or
    is another folder by the same name now (one DVC made again, mid-push, after the first was moved)."""
    seen = _IDENTITY.get(url)
    now = _folder(url).stat() if is_local(url) and remote_is_there(url) else None
    if not remote_is_there(url) or (seen and now and (now.st_dev, now.st_ino) != seen):
        raise StageError(f"remote {url} has gone (moved, deleted or unmounted): stopping so that no cell is pushed "
                         "into a new, empty folder; the finished cells stay in this clone and are pushed when a "
                         "worker runs again here with the remote back")


def dvc_reason(stderr: str) -> str:
    """DVC's own reason for a failure: its last ``ERROR`` line, else its last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no message"])[-1]


def push_cells(targets: list[str], remote_name: str, url: str, tries: int = PUSH_TRIES,
               backoff: float | None = None) -> str | None:
    """``dvc push --run-cache`` of these stages to the remote, tried ``tries`` times; None when it went, else
    DVC's reason for the last failure. Stops (:func:`require_remote`) when the remote has gone."""
    backoff = float(os.environ.get("DSS_PUSH_BACKOFF", PUSH_BACKOFF)) if backoff is None else backoff
    reason = None
    for attempt in range(tries):
        require_remote(url)
        proc = subprocess.run(["dvc", "push", "--run-cache", "-r", remote_name, *targets],  # no -q: DVC states its reason
                              capture_output=True, text=True)
        require_remote(url)  # still the same folder: a push into one made again mid-push is not a push
        if proc.returncode == 0:
            return None
        reason = dvc_reason(proc.stderr + proc.stdout)
        print(f"  push failed (try {attempt + 1} of {tries}): {reason}", flush=True)
        if attempt + 1 < tries:
            time.sleep(backoff * 2 ** attempt)
    return reason


# ----- cells from run-cache entries, whatever code made them -----

def md5_of(path: Path) -> str:
    """A file's md5, as DVC records it."""
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dotted(params: dict[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError
        node = node[part]
    return node


def entry_fits(entry: dict[str, Any], root: Path, params: dict[str, Any]) -> bool:
    """Whether a run-cache entry is this grid's cell as it stands: the same settings (every parameter it
    recorded has its value now) and the same data (every dependency outside the code has its hash now).
    Code may differ: a cell made by older code is kept, and counted as such."""
    if changed_settings(entry, params):
        return False
    for dep in entry.get("deps") or []:
        if dep["path"].startswith(CODE_PREFIXES):
            continue
        path = root / dep["path"]
        if not path.is_file() or "md5" not in dep or md5_of(path) != dep["md5"]:
            return False
    return True


def changed_settings(entry: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The settings an entry (of a lock or the run-cache) recorded that have another value now, each as
    ``key: then -> now`` with its dotted key (``train.max_steps: 2500 -> 4000``)."""
    changes = []
    for values in (entry.get("params") or {}).values():
        for key, value in values.items():
            now = _dotted(params, key)
            if now != value:
                changes += _differences(key, value, now)
    return changes


def _differences(key: str, then: Any, now: Any) -> list[str]:
    """``key: then -> now`` for each leaf that differs (a setting absent on one side reads ``(none)``)."""
    if isinstance(then, dict) and isinstance(now, dict):
        return [d for k in sorted(set(then) | set(now), key=str) if then.get(k) != now.get(k)
                for d in _differences(f"{key}.{k}", then.get(k), now.get(k))]
    return [f"{key}: {_shown(then)} -> {_shown(now)}"]


def _shown(value: Any) -> str:
    return "(none)" if value is KeyError else repr(value)


def code_matches(entry: dict[str, Any], root: Path) -> bool:
    """Whether every code dependency of an entry has its recorded hash in this checkout."""
    return all((root / d["path"]).is_file() and md5_of(root / d["path"]) == d.get("md5")
               for d in entry.get("deps") or [] if d["path"].startswith(CODE_PREFIXES))


def run_cache_entries(root: Path) -> Iterable[dict[str, Any]]:
    """Every entry of this clone's local run-cache (``.dvc/cache/runs/<k>/<key>/<value>``), parsed."""
    for path in sorted((root / ".dvc" / "cache" / "runs").glob("*/*/*")):
        try:
            entry = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue  # DVC itself drops a corrupt entry; it is not a cell
        if isinstance(entry, dict) and isinstance(entry.get("outs"), list):
            yield entry


def adopt_cells(lock_path: Path, stages: dict[str, set[str]], root: Path, params: dict[str, Any]) -> list[str]:
    """Record in ``lock_path`` (a pipeline's ``dvc.lock``) a run-cache entry for each stage it lacks whose
    outputs are that stage's (``stages``: stage name -> its output paths) and which fits this grid
    (:func:`entry_fits`); an entry made by the code of this checkout is preferred. Returns the stages
    recorded; their outputs are then fetched by the caller (``dvc pull``)."""
    from dvc.utils.serialize import dump_yaml  # DVC's own YAML style, so DVC's later rewrites change nothing

    lock = (yaml.safe_load(lock_path.read_text()) if lock_path.is_file() else None) or {}
    recorded = lock.setdefault("stages", {})
    by_outs = {frozenset(outs): name for name, outs in stages.items() if name not in recorded}
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in run_cache_entries(root):
        name = by_outs.get(frozenset(o["path"] for o in entry["outs"]))
        if name is not None and entry_fits(entry, root, params):
            found.setdefault(name, []).append(entry)
    if not found:
        return []
    for name in sorted(found):
        # the same code as here first, then a fixed order: a cell trained by two versions of the code is rare
        # (workers skip finished cells), and either result is that cell's
        entries = sorted(found[name], key=lambda e: (not code_matches(e, root), json.dumps(e, sort_keys=True)))
        recorded[name] = entries[0]
    lock.setdefault("schema", "2.0")
    dump_yaml(str(lock_path), {"schema": lock["schema"], "stages": recorded})
    return sorted(found)


def ignore_outputs(root: Path, targets: Iterable[str]) -> None:
    """Have DVC list these stages' outputs in their folders' ``.gitignore``, as ``dvc repro`` does for a
    stage it runs: a cell recorded from the run-cache (:func:`adopt_cells`) is otherwise seen by git, and
    ``git add results/<grid>`` would commit its files beside the store's copies."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo, repo.scm_context(quiet=True):
        for target in targets:
            for stage in repo.stage.collect(target):
                for out in stage.outs:
                    if not repo.scm.is_tracked(out.fspath):
                        out.ignore()


def forget_cells(lock_path: Path, names: Iterable[str]) -> None:
    """Remove stages from a lock (adopted cells whose outputs could not be fetched)."""
    from dvc.utils.serialize import dump_yaml

    names = set(names)
    lock = yaml.safe_load(lock_path.read_text()) or {}
    lock["stages"] = {k: v for k, v in (lock.get("stages") or {}).items() if k not in names}
    dump_yaml(str(lock_path), lock)


# ----- the repository's store -----

def object_path(store: Path, md5: str) -> Path:
    """Where a DVC (3.x) remote keeps the object of this hash."""
    return store / "files" / "md5" / md5[:2] / md5[2:]


def store_faults(store: Path, outs: dict[str, tuple[str, str]]) -> list[str]:
    """The store's missing or damaged objects among these outputs (path -> (md5, cell)), one line each naming
    the cell, its file and the object; a directory output is checked with every file it lists."""
    faults = []

    def check(md5: str, cell: str, what: str) -> bytes | None:
        obj = object_path(store, md5)
        if not obj.is_file():
            faults.append(f"{cell}: {what}: object {obj} is missing")
            return None
        data = obj.read_bytes()
        if hashlib.md5(data).hexdigest() != md5.removesuffix(".dir"):
            faults.append(f"{cell}: {what}: object {obj} is damaged (its content does not match its hash)")
            return None
        return data

    for path, (md5, cell) in sorted(outs.items()):
        data = check(md5, cell, path)
        if data is not None and md5.endswith(".dir"):
            try:
                listing = json.loads(data)
            except ValueError:
                faults.append(f"{cell}: {path}: the listing {object_path(store, md5)} is not JSON")
                continue
            for item in listing:
                check(item["md5"], cell, f"{path}/{item['relpath']}")
    return faults


def verify_store(store: Path, outs: dict[str, tuple[str, str]]) -> None:
    """Stop, before DVC reads the store (it deletes an object that fails its check), when an object these
    outputs need is missing or damaged; nothing is deleted or changed."""
    faults = store_faults(store, outs)
    if faults:
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        raise StageError(f"the store lacks a kept cell's output: {faults[0]}{more}; nothing was changed. Restore it "
                         f"from git (`git checkout -- {store.name}` or `git log -- {store.name}`), or from the "
                         "workers' remote (`grid assemble ... --remote`)")

