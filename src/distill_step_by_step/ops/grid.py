"""A profile's grid as its own DVC pipeline, built by many workers through a DVC remote, kept in this repository.

``grids/<profile>/`` holds a grid's pipeline: ``dvc.yaml`` (a copy of the repository's one ``dvc.yaml``),
``params.yaml`` (``params.yaml`` with ``profiles/<profile>.yaml`` applied and the grid's own paths: made
by ``init``, checked against its sources by the tests), ``dvc.lock`` (what DVC ran, stage by stage) and
``cell_times.json`` (measured seconds per cell, wall and CPU time, for budgets and estimates). Its results
go to ``results/<profile>/`` (DVC-cached, kept in the repository's ``store`` remote) and its report to ``reports/<profile>/`` (git),
beside the CPU demo's.

* ``work`` runs one worker: a deterministic, disjoint share of the grid's cells (worker I of N; whole
  comparison points, every method and seed of a (dataset, student, fraction), go to one worker, in grid
  order), each through ``dvc repro`` in this clone. With ``--remote`` it first fetches what other workers
  pushed (DVC's run-cache: a cell one of them finished is restored, not trained), and pushes each cell as
  it finishes (its outputs and run-cache entry). With ``--budget`` it starts no cell whose estimated time
  does not fit what is left. A worker killed mid-cell loses that cell's progress since its last saved
  state only: started again on the same disk, the stage resumes it.
* ``assemble`` fetches every pushed cell from the remote and restores it into this pipeline from the
  run-cache (it never trains: a cell that is not in the remote is left missing), then builds the report.
* ``status`` lists finished and missing cells, and the time the missing ones are estimated to need: wall
  time on the machines that measured the cells (budgets use it), and CPU time (what an idle machine needs).

A cell counts as finished once this pipeline's ``dvc.lock`` records it with its results in place. The
lock keeps the code hashes it ran with: after a code change ``dvc status`` reports those cells changed,
and they stay as they are (workers train missing cells only, ``dvc repro -s``); ``grid status`` says how
many were made by code that has changed since. Plain ``dvc repro`` inside a grid would retrain every such
cell, so a grid's cells train only under a worker (``DSS_WORKER`` set), and never under ``assemble``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import StageError
from ..train.cell import CURVE_FILE, GRIDS_DIR as GRIDS, METRICS_FILE, PREDICTIONS_FILE, RECORD_FILE, WORKER_ENV, Cell
from .profiles import apply_profile, load_profile
from .remotes import (adopt_cells, changed_settings, forget_cells, ignore_outputs, push_cells, require_remote,
                      resolve_remote, verify_store)
from ..settings import Settings, parse_settings, read_params

GRIDS_DIR = Path(GRIDS)
PIPELINE = "dvc.yaml"  # the repository's pipeline, which every grid's dvc.yaml copies
TIMES_FILE = "cell_times.json"
REMOTE_NAME = "grid"  # the remote a worker or an assembly is given, as a local (uncommitted) DVC remote
STORE = "store"  # the DVC remote inside the repository (store/) that keeps the committed cells' small outputs
DEFAULT = "default"  # how the commands name the embedded default (the repository's own pipeline)
ARCHIVE_STAGE = "data/raw/dss-datasets.zip.dvc"
DATA_STAGE = "baseline"  # the last of the data stages every cell needs
GUESS_MINUTES = 30.0  # a cell's estimate before any cell of its kind has been measured: err on the long side
SAFETY = 1.25  # measured times are medians; a cell may take a little longer


@dataclass(frozen=True)
class Grid:
    """A profile's grid pipeline under ``grids/<profile>/``, or (``profile`` None) the embedded default's,
    the repository's own ``dvc.yaml`` and ``params.yaml`` (paths relative to the repository root)."""

    profile: str | None
    root: Path = Path(".")

    @property
    def name(self) -> str:
        return self.profile or DEFAULT

    @property
    def folder(self) -> Path:
        return self.root if self.profile is None else self.root / GRIDS_DIR / self.profile

    @property
    def params_path(self) -> Path:
        return self.folder / "params.yaml"

    @property
    def pipeline(self) -> str:
        """The pipeline file as DVC targets name it, relative to the repository root."""
        return "dvc.yaml" if self.profile is None else (GRIDS_DIR / self.profile / "dvc.yaml").as_posix()

    def target(self, stage: str) -> str:
        return f"{self.pipeline}:{stage}"

    def settings(self) -> Settings:
        if not self.params_path.is_file():
            raise StageError(f"no grid {self.name!r}: {self.params_path} is missing "
                             f"(python -m distill_step_by_step.grid init {self.name})")
        return parse_settings(read_params(self.params_path), str(self.params_path))

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in grid order."""
        grid = self.settings().grid
        return [Cell(d, m, s, f, seed, m in grid.variants) for d, m, s, f, seed in grid.cells()]

    def locked(self) -> dict[str, dict[str, Any]]:
        """The stages this pipeline's ``dvc.lock`` records, by name."""
        path = self.folder / "dvc.lock"
        return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.is_file() else {}

    def finished(self) -> set[Cell]:
        """The cells the lock records, under the grid's present settings, whose results are in place."""
        settings, locked, outdated = self.settings(), self.locked(), self.outdated()
        return {c for c in self.cells() if c.stage in locked and c not in outdated
                and (self.root / c.results_dir(settings.paths.results) / METRICS_FILE).is_file()}

    def outdated(self) -> dict[Cell, list[str]]:
        """The cells the lock records under settings the grid no longer has, each with what changed."""
        if self.profile is None:  # the embedded default's settings are DVC's alone (`dvc exp run -S`)
            return {}
        locked, params = self.locked(), read_params(self.params_path)
        changes = {c: changed_settings(locked[c.stage], params) for c in self.cells() if c.stage in locked}
        return {c: why for c, why in changes.items() if why}

    def outputs(self, cell: Cell) -> set[str]:
        """Every output of the cell's stage, as its lock entry names them."""
        paths = self.settings().paths
        return {cell.model_dir(paths.models).as_posix(),
                *((cell.results_dir(paths.results) / name).as_posix()
                  for name in (RECORD_FILE, PREDICTIONS_FILE, METRICS_FILE, CURVE_FILE))}

    def kept_outputs(self, cells: list[Cell] | set[Cell]) -> list[str]:
        """The outputs of these cells that the repository keeps in its ``store`` remote: every cell's record,
        predictions, metrics and curve, and its checkpoint folder where the grid keeps no weights (then it is
        its config alone)."""
        paths = self.settings().paths
        outs = []
        for c in sorted(cells, key=lambda c: c.name):
            outs += [(c.results_dir(paths.results) / name).as_posix()
                     for name in (RECORD_FILE, PREDICTIONS_FILE, METRICS_FILE, CURVE_FILE)]
            if not self.settings().run.keep_weights:
                outs.append(c.model_dir(paths.models).as_posix())
        return outs

    def times_path(self) -> Path:
        return self.folder / TIMES_FILE


# ----- making a grid's pipeline -----

def grid_params(profile: str, root: Path = Path(".")) -> dict[str, Any]:
    """``params.yaml`` with the profile applied and the grid's own paths: what ``grids/<profile>/params.yaml``
    holds."""
    params = apply_profile(read_params(root / "params.yaml"), load_profile(str(root / "profiles" / f"{profile}.yaml")))
    params["paths"] = {"root": "../..", "params": f"{GRIDS_DIR.as_posix()}/{profile}/params.yaml",
                       "data": f"data/{profile}", "models": f"models/{profile}",
                       "results": f"results/{profile}", "reports": f"reports/{profile}"}
    return params


def _params_text(profile: str, params: dict[str, Any]) -> str:
    header = (f"# The {profile} grid's settings: params.yaml with profiles/{profile}.yaml applied, and this grid's\n"
              f"# own paths. Made by `python -m distill_step_by_step.grid init {profile}`; edit those two files and\n"
              "# run it again, not this one (tests/test_grid.py checks that it matches them).\n")
    return header + yaml.safe_dump(params, sort_keys=False, allow_unicode=True, width=110)


def _pipeline_text(profile: str, root: Path) -> str:
    # A copy, not a link: DVC reads a link in the work tree but not in a git revision (`dvc metrics diff`,
    # `dvc plots diff`, `dvc exp show`), where it would see the link's target path instead of a pipeline.
    header = (f"# A copy of the repository's dvc.yaml for the {profile} grid, made by `python -m distill_step_by_step.grid\n"
              f"# init {profile}`; edit ../../dvc.yaml and run it again, not this one (tests/test_grid.py checks it).\n")
    return header + (root / PIPELINE).read_text()


def init(profile: str, root: Path = Path(".")) -> Grid:
    """Write (or bring up to date) ``grids/<profile>/``: its params and its copy of the pipeline."""
    grid = Grid(profile, root)
    params = grid_params(profile, root)
    parse_settings(params, f"profiles/{profile}.yaml applied to params.yaml")
    grid.folder.mkdir(parents=True, exist_ok=True)
    grid.params_path.write_text(_params_text(profile, params))
    (grid.folder / "dvc.yaml").write_text(_pipeline_text(profile, root))
    return grid


def out_of_date(profile: str, root: Path = Path(".")) -> str | None:
    """Why ``grids/<profile>/`` does not match its sources (None when it does)."""
    grid = Grid(profile, root)
    pipeline = grid.folder / "dvc.yaml"
    if not pipeline.is_file() or pipeline.is_symlink() or pipeline.read_text() != _pipeline_text(profile, root):
        return f"{pipeline} is not a copy of {PIPELINE}"
    if not grid.params_path.is_file() or grid.params_path.read_text() != _params_text(profile, grid_params(profile, root)):
        return f"{grid.params_path} does not match params.yaml with profiles/{profile}.yaml applied"
    return None


# ----- shares, order and estimates -----

def points(cells: list[Cell]) -> list[tuple[str, str, str]]:
    """The comparison points (dataset, student, fraction) of the cells, in grid order."""
    return list(dict.fromkeys((c.dataset, c.student, c.fraction) for c in cells))


def share(cells: list[Cell], worker: int, workers: int) -> list[Cell]:
    """Worker ``worker`` (1-based) of ``workers``: every ``workers``-th comparison point, whole, in grid
    order (every method and seed of one point before the next), seed by seed (every method of seed 0 first:
    a worker stopped mid-point leaves whole paired comparisons)."""
    if not 1 <= worker <= workers:
        raise ValueError(f"worker {worker} of {workers}: needs 1 <= worker <= workers")
    mine = set(points(cells)[worker - 1::workers])
    by_point: dict[tuple[str, str, str], list[Cell]] = defaultdict(list)
    for c in cells:
        if (c.dataset, c.student, c.fraction) in mine:
            by_point[(c.dataset, c.student, c.fraction)].append(c)
    seeds = list(dict.fromkeys(c.seed for c in cells))
    return [c for p in points(cells) if p in by_point
            for c in sorted(by_point[p], key=lambda c: seeds.index(c.seed))]


@dataclass
class CellTimes:
    """Measured seconds per cell (``grids/<profile>/cell_times.json`` and this run's own), and estimates.
    Wall time (``seconds``) is what a budget needs on a machine as busy as the one that measured it; CPU time
    (``cpu``: the cell's processes, user and system, measured since cells recorded it) is what it needs on
    an idle one, however busy the measuring machine was."""

    seconds: dict[str, float] = field(default_factory=dict)  # cell name -> wall seconds
    guess: float = GUESS_MINUTES * 60
    cpu: dict[str, float] = field(default_factory=dict)  # cell name -> CPU seconds, where measured

    @classmethod
    def load(cls, grid: Grid, guess_minutes: float = GUESS_MINUTES) -> "CellTimes":
        path = grid.times_path()
        data = json.loads(path.read_text()) if path.is_file() else {}
        return cls({k: float(v["seconds"]) for k, v in data.items()}, guess_minutes * 60,
                   {k: float(v["cpu_seconds"]) for k, v in data.items() if v.get("cpu_seconds") is not None})

    def estimate(self, cell: Cell) -> float:
        """Seconds the cell should take: the median of the most similar measured cells (same dataset, method
        and student; else same method and student; else same student), with a margin; else the guess."""
        found = _like(self.seconds, cell)
        return SAFETY * statistics.median(found) if found else self.guess

    def cpu_estimate(self, cell: Cell) -> float | None:
        """CPU seconds the cell should take, as :meth:`estimate` picks its cells, without a margin; None where
        no similar cell has a CPU time."""
        found = _like(self.cpu, cell)
        return statistics.median(found) if found else None


def _like(measured: dict[str, float], cell: Cell) -> list[float]:
    """The measures of the cells most like ``cell``: same dataset, method and student; else same method and
    student; else same student (none: empty)."""
    parts = cell.name.split("/")
    for keep in ((0, 1, 2), (1, 2), (2,)):
        found = [s for name, s in measured.items() if [name.split("/")[i] for i in keep] == [parts[i] for i in keep]]
        if found:
            return found
    return []


def time_entry(entry: Any) -> dict[str, float]:
    """One cell's entry of ``cell_times.json``, checked: ``{"seconds": wall[, "cpu_seconds": CPU]}``."""
    out = {"seconds": round(float(entry["seconds"]), 1)}
    if entry.get("cpu_seconds") is not None:
        out["cpu_seconds"] = round(float(entry["cpu_seconds"]), 1)
    return out


def record_times(grid: Grid, times: dict[str, dict[str, float]]) -> None:
    """Merge measured cell times (each cell's entry as :func:`time_entry` reads it) into
    ``grids/<profile>/cell_times.json``."""
    path = grid.times_path()
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update({name: time_entry(entry) for name, entry in times.items()})
    path.write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")


def gather_worker_times(grid: Grid) -> None:
    """Merge the cell times that this host's workers measured (``launch/worker.sh`` clones in
    ``$DSS_WORKDIR``, default ``.workers/``) into this repository's ``cell_times.json``, for later budgets."""
    workdir = Path(os.environ.get("DSS_WORKDIR") or grid.root / ".workers")
    inside = grid.times_path().relative_to(grid.root).as_posix()
    for path in sorted(workdir.glob(f"{grid.name}-*/{inside}")):
        record_times(grid, json.loads(path.read_text()))


def carry_times(grid: Grid, path: Path) -> None:
    """Merge the cell times an earlier run of this clone measured into this grid's ``cell_times.json``, then
    remove them: ``launch/worker.sh`` keeps that run's file in ``path`` while it moves the clone to newer code,
    and the file as that code had it in ``<path>.base.json``; only the entries the run added or changed count."""
    base_path = path.with_suffix(".base.json")
    entries: dict[Path, dict[str, dict[str, float]]] = {}
    for p in (path, base_path):
        try:
            if p.is_file():
                entries[p] = {name: time_entry(v) for name, v in json.loads(p.read_text()).items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StageError(f"{p}: not a file of cell times ({exc.__class__.__name__}: {exc})") from None
    base = entries.get(base_path, {})
    record_times(grid, {name: e for name, e in entries.get(path, {}).items() if base.get(name) != e})
    path.unlink()
    base_path.unlink(missing_ok=True)


def trained_since(grid: Grid, cell: Cell, since: float) -> bool:
    """Whether the cell's run log has a finished training run since ``since`` (wall clock): the cell was
    trained here, not restored from the run-cache."""
    from ..train.runlog import read_events

    return any(e["event"] == "finished" and e["time"] >= since
               for e in read_events(cell.model_dir(grid.settings().paths.models)))


# ----- DVC -----

def dvc(*args: str, env: dict[str, str] | None = None, check: bool = True, quiet: bool = False) -> int:
    """Run a dvc command, its output shown (or not, with ``quiet``); a failure stops the worker when ``check``."""
    shown = args if len(args) <= 12 else (*args[:8], f"... ({len(args) - 8} more)")
    print("+ dvc " + " ".join(shown), flush=True)
    proc = subprocess.run(["dvc", *args], env={**os.environ, **(env or {})},
                          stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.DEVNULL if quiet else None)
    if check and proc.returncode != 0:
        raise StageError(f"`dvc {' '.join(args)}` failed ({proc.returncode})")
    return proc.returncode


def dvc_status(root: Path, targets: list[str], check: bool = False) -> dict[str, Any]:
    """``dvc status --json`` of these targets, by stage; with ``check``, a failure (or output that is not
    DVC's JSON) stops the command, else it reads as nothing changed."""
    proc = subprocess.run(["dvc", "status", "--json", *targets], capture_output=True, text=True, cwd=root)
    try:
        if proc.returncode != 0:
            raise ValueError(proc.stderr.strip() or f"exit {proc.returncode}")
        return json.loads(proc.stdout or "{}")
    except ValueError as exc:  # json.JSONDecodeError is one
        if check:
            raise StageError(f"`dvc status --json {' '.join(targets)}` failed: {exc}") from None
        return {}


def use_remote(url: str) -> None:
    """Make ``url`` (any DVC remote: a folder made absolute by :func:`remotes.resolve_remote`, s3://,
    ssh://, ...) this clone's default remote, named ``grid`` (local config: nothing committed);
    ``dvc repro --pull`` fetches what a restored cell needs from it."""
    dvc("remote", "add", "--local", "--force", "--default", REMOTE_NAME, url, quiet=True)


def fetch_archive(remote: bool) -> None:
    """The corpora archive into DVC's cache: from the remote, else from where it was imported from."""
    if remote and dvc("pull", "-q", "-r", REMOTE_NAME, ARCHIVE_STAGE, check=False, quiet=True) == 0:
        return
    if dvc("pull", "-q", ARCHIVE_STAGE, check=False, quiet=True) != 0:
        dvc("update", "-q", ARCHIVE_STAGE)
    if remote:  # so that machines without the archive's source get it from the remote
        dvc("push", "-q", "-r", REMOTE_NAME, ARCHIVE_STAGE, check=False)


def prepare(grid: Grid, remote: str | None) -> None:
    """What every cell needs: the grid's pipeline, the remote, the archive, the run-cache, the data stages."""
    if grid.profile is not None and (why := out_of_date(grid.profile, grid.root)) is not None:
        raise StageError(f"grid {grid.profile}: {why} (python -m distill_step_by_step.grid init {grid.profile})")
    if remote:
        use_remote(remote)
    fetch_archive(bool(remote))
    if remote:  # every cell other workers pushed: DVC restores them instead of training them again
        dvc("fetch", "-q", "--run-cache", "-r", REMOTE_NAME, grid.target(DATA_STAGE), check=False)
    dvc("repro", *(["--pull"] if remote else []), grid.target(DATA_STAGE))
    if grid.profile is not None:
        retire(grid)
        adopt(grid, remote)


def adopt(grid: Grid, remote: str | None) -> list[Cell]:
    """Record in this pipeline's lock every cell that the run-cache (this clone's, and the remote's once
    fetched) holds for this grid's settings and data, whatever code made it, and bring its outputs
    (``remotes.adopt_cells``): no worker trains it again and no assembly misses it."""
    cells = {c.stage: c for c in grid.cells()}
    lock = grid.folder / "dvc.lock"
    names = adopt_cells(lock, {name: grid.outputs(c) for name, c in cells.items()}, grid.root,
                        read_params(grid.params_path))
    if not names:
        return []
    dvc("pull" if remote else "checkout", "-q", *(["-r", REMOTE_NAME] if remote else []),
        *[grid.target(n) for n in names], check=False, quiet=True)
    metrics = grid.settings().paths.results
    lost = [n for n in names if not (grid.root / cells[n].results_dir(metrics) / METRICS_FILE).is_file()]
    if lost:
        forget_cells(lock, lost)
        print(f"  {len(lost)} cells of the run-cache have no outputs to fetch (first: {cells[lost[0]].name}): "
              "left to train", flush=True)
    got = [cells[n] for n in names if n not in lost]
    ignore_outputs(grid.root, [grid.target(c.stage) for c in got])
    if got:
        print(f"  recorded {len(got)} finished cells from the run-cache (any code version)", flush=True)
    return got


# ----- the commands -----

def work(grid: Grid, remote: str | None, worker: int = 1, workers: int = 1, budget_seconds: float | None = None,
         guess_minutes: float = GUESS_MINUTES) -> dict[str, list[str]]:
    """Run this worker's share of the grid (see the module docstring); returns the cells done and skipped."""
    started = time.monotonic()
    prepare(grid, remote)
    restore_kept(grid)
    times = CellTimes.load(grid, guess_minutes)
    done_before = grid.finished()
    todo = [c for c in share(grid.cells(), worker, workers) if c not in done_before]
    print(f"worker {worker}/{workers}: {len(todo)} cells to do ({len(done_before)} of the grid already finished)",
          flush=True)
    report: dict[str, list[str]] = {"done": [], "trained": [], "not_started": [], "failed": [], "unpushed": []}
    unpushed = sorted(done_before, key=str)  # finished here by an earlier run that may have stopped before its push
    if remote and unpushed:
        unpushed = _push(grid, remote, unpushed)
    for cell in todo:
        left = None if budget_seconds is None else budget_seconds - (time.monotonic() - started)
        estimate = times.estimate(cell)
        if left is not None and estimate > left:
            print(f"  not starting {cell.name}: estimated {estimate:.0f} s, {max(left, 0):.0f} s of the budget left",
                  flush=True)
            report["not_started"].append(cell.name)
            continue
        t0, wall, cpu0 = time.monotonic(), time.time(), _children_cpu()
        repro = ["repro", *(["--pull"] if remote else []), "-s", grid.target(cell.stage)]
        if dvc(*repro, env={WORKER_ENV: f"{worker}/{workers}"}, check=False) != 0:
            report["failed"].append(cell.name)
            continue
        if trained_since(grid, cell, wall):  # a cell restored from the run-cache says nothing of its cost
            # the whole stage, start-up and test included: wall time, and the CPU time of its processes
            times.seconds[cell.name] = time.monotonic() - t0
            times.cpu[cell.name] = _children_cpu() - cpu0
            report["trained"].append(cell.name)
            record_times(grid, {cell.name: {"seconds": times.seconds[cell.name],  # now: an assembly gathers it
                                            "cpu_seconds": times.cpu[cell.name]}})
        report["done"].append(cell.name)
        if remote:  # at once (with any earlier push that failed): a worker stopped after this loses nothing
            unpushed = _push(grid, remote, [*unpushed, cell])
    report["unpushed"] = [c.name for c in unpushed]
    print(f"worker {worker}/{workers}: {len(report['done'])} cells done ({len(report['trained'])} trained here), "
          f"{len(report['not_started'])} not started "
          f"(budget), {len(report['failed'])} failed, {len(unpushed)} not pushed, "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    if unpushed:
        print(f"worker {worker}/{workers}: {len(unpushed)} finished cells are in this clone only (first: "
              f"{unpushed[0].name}); run the worker again once the remote takes pushes", flush=True)
    return report


def _children_cpu() -> float:
    """User and system CPU seconds of this process's finished children (and theirs, which each waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _push(grid: Grid, remote: str, cells: list[Cell]) -> list[Cell]:
    """Push these finished cells (outputs and run-cache entries); returns those that could not be pushed."""
    print(f"+ dvc push --run-cache -r {REMOTE_NAME} ({len(cells)} cells)", flush=True)
    reason = push_cells([grid.target(c.stage) for c in cells], REMOTE_NAME, remote)
    if reason is None:
        return []
    print(f"  {len(cells)} cells not pushed to {remote}: {reason}", flush=True)
    return cells


def assemble(grid: Grid, remote: str | None) -> list[Cell]:
    """Restore every cell finished in the remote into this pipeline (training none), build the report and
    keep the cells' small outputs in the repository's store; returns the cells still missing."""
    prepare(grid, remote)
    restore_kept(grid)
    gather_worker_times(grid)
    # `prepare` recorded every cell the run-cache holds, whatever code made it (`adopt`): a cell still missing
    # has no run anywhere this clone reaches, and an assembly trains nothing
    if remote:
        require_remote(remote)
    no_fewer_cells(grid)
    finished = grid.finished()
    if finished:
        dvc("repro", "-s", grid.target("report"))
        keep(grid)
    return [c for c in grid.cells() if c not in finished]


def commit_code(grid: Grid) -> tuple[list[str], dict[str, str]]:
    """Record this checkout's code in the lock for every stage the lock holds whose only change is code,
    with DVC's own ``commit`` (forced; an output this clone lacks, such as a checkpoint the store does not
    keep, keeps its recorded hash): after a refactor shown to change no number (README "After a
    refactor"). The data stages are run first (DVC reruns them only if their code changed). Returns the
    stages recorded, and those left as they are with why (changed data or parameters)."""
    from dvc.repo import Repo

    restore_kept(grid)
    dvc("repro", "-q", grid.target(DATA_STAGE))
    changed = dvc_status(grid.root, [grid.pipeline], check=True)
    repo, names, left = Repo(str(grid.root)), [], {}
    stages = {s.addressing.rsplit(":", 1)[-1] for s in repo.stage.collect(grid.pipeline)}
    for name in sorted(set(grid.locked()) & stages):
        why = _not_code(changed.get(name, []))
        if why:
            left[name] = why
            continue
        repo.commit(grid.target(name), force=True, allow_missing=True)
        names.append(name)
    return names, left


def _not_code(status: list[Any]) -> str | None:
    """What in a stage's ``dvc status`` is not a change of code (a package module or stage script)."""
    for what in status:
        if not isinstance(what, dict):
            return str(what)
        for path, state in what.get("changed deps", {}).items():
            if not path.replace("../", "").startswith(("src/", "stages/")):
                return f"{path} {state}"
        if "changed outs" in what:
            moved = {p: st for p, st in what["changed outs"].items() if st not in ("deleted", "not in cache")}
            if moved:
                return "outputs changed: " + ", ".join(f"{p} {st}" for p, st in sorted(moved.items()))
        if set(what) - {"changed deps", "changed outs"}:
            return ", ".join(sorted(set(what) - {"changed deps", "changed outs"}))
    return None


def keep(grid: Grid) -> None:
    """Push the finished cells' small outputs into the repository's DVC remote ``store`` (commit it with git)."""
    dvc("push", "-q", "-r", STORE, *grid.kept_outputs(grid.finished()))


def retire(grid: Grid) -> list[Cell]:
    """Take out of this pipeline the cells its lock records under settings the grid no longer has (a profile
    edited: ``train.max_steps`` raised, a student changed): they are other experiments, trained again rather
    than kept as this grid's. Their lock entries and workspace files go; git history and the store keep the
    results they had. Returns them. (Cells made by older *code* stay: see the module docstring.)"""
    outdated = grid.outdated()
    if not outdated:
        return []
    forget_cells(grid.folder / "dvc.lock", [c.stage for c in outdated])
    for cell in outdated:
        for path in grid.outputs(cell):
            target = grid.root / path
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    print(f"  {_outdated_line(outdated)}: trained again", flush=True)
    return sorted(outdated, key=lambda c: c.name)


def _outdated_line(outdated: dict[Cell, list[str]]) -> str:
    first = min(outdated, key=lambda c: c.name)
    return (f"{len(outdated)} cells were made with settings this grid no longer has (first: {first.name}: "
            f"{'; '.join(outdated[first][:3])})")


def restore_kept(grid: Grid) -> None:
    """Bring from the repository's store the small outputs of every cell the lock records but the workspace
    lacks (a fresh clone has the lock, not the files), so that it counts as finished and no worker trains
    it again. The store's objects are checked first (``remotes.verify_store``): DVC deletes one that fails
    its check, and a report built without it would quietly have fewer cells."""
    settings, locked = grid.settings(), grid.locked()
    absent = [c for c in grid.cells() if c.stage in locked
              and not (grid.root / c.results_dir(settings.paths.results) / METRICS_FILE).is_file()]
    if not absent:
        return
    wanted = set(grid.kept_outputs(absent))
    verify_store(grid.root / STORE, {o["path"]: (o["md5"], c.name) for c in absent
                                     for o in locked[c.stage].get("outs", []) if o["path"] in wanted})
    dvc("pull", "-q", "-r", STORE, *sorted(wanted), check=False, quiet=True)


def no_fewer_cells(grid: Grid) -> None:
    """Stop before a report or a lock is written with fewer cells than the lock records: a cell whose lock
    entry is there but whose results are not."""
    locked, finished = grid.locked(), grid.finished()
    lost = [c for c in grid.cells() if c.stage in locked and c not in finished]
    if lost:
        raise StageError(f"{len(lost)} cells that {grid.folder / 'dvc.lock'} records have no results here (first: "
                         f"{lost[0].name}): not building a report with fewer cells; `git status {STORE}` and "
                         f"`dvc pull -r {STORE}` say what is missing")


def report(grid: Grid) -> None:
    """Rebuild the grid's report from what the repository keeps, training nothing: the cells' small outputs
    come from the store, and only the ``report`` stage runs (``dvc repro -s``)."""
    retire(grid)
    restore_kept(grid)
    no_fewer_cells(grid)
    # a grid with no cell yet (the teacher-only report) has no results folder in a clone: the stage's dependency
    (grid.root / grid.settings().paths.results).mkdir(parents=True, exist_ok=True)
    dvc("repro", "-s", grid.target("report"))


def status_lines(grid: Grid, guess_minutes: float = GUESS_MINUTES) -> list[str]:
    """Finished and missing cells by (dataset, method, student, fraction) with their seeds, and estimates."""
    cells, finished, times = grid.cells(), grid.finished(), CellTimes.load(grid, guess_minutes)
    missing = [c for c in cells if c not in finished]
    need = sum(times.estimate(c) for c in missing)
    lines = [f"grid {grid.profile}: {len(finished)} of {len(cells)} cells finished, {len(missing)} missing "
             f"(estimated {need / 3600:.2f} h of one worker)"]
    lines += _cpu_lines(times, [c for c in cells if c in finished], missing)
    outdated = grid.outdated()
    if outdated:
        lines.append(f"  {_outdated_line(outdated)}: counted missing, the next worker trains them again")
    stale, absent = _stale(grid, finished)
    if stale:
        lines.append(f"  {len(stale)} finished cells were made by code or data that changed since (`dvc status "
                     f"{grid.pipeline}`); they are kept")
    if absent:
        lines.append(f"  {len(absent)} finished cells' training data is not in this clone, so whether it changed is "
                     f"not checked (`dvc repro {grid.target(DATA_STAGE)}` makes it, training nothing)")
    for title, group in (("finished", [c for c in cells if c in finished]), ("missing", missing)):
        lines.append(f"{title}:")
        by: dict[tuple[str, str, str, str], list[Cell]] = defaultdict(list)
        for c in group:
            by[(c.dataset, c.method, c.student, c.fraction)].append(c)
        for (d, m, s, f), cs in by.items():
            seeds = " ".join(str(c.seed) for c in cs)
            est = f"  (~{times.estimate(cs[0]) / 60:.1f} min each)" if title == "missing" else ""
            lines.append(f"  {d:6} {m:13} {s:14} {100 * float(f):>5.4g}%  seeds {seeds}{est}")
    return lines + _collapsed_lines(grid, [c for c in cells if c in finished])


def _cpu_lines(times: CellTimes, finished: list[Cell], missing: list[Cell]) -> list[str]:
    """CPU time: what the finished cells that measured it took, and what the missing ones need by their most
    similar measured cells (an idle machine's time, where the wall-time estimate carries the contention of
    the machines that measured it)."""
    if not times.cpu:
        return []
    took = [times.cpu[c.name] for c in finished if c.name in times.cpu]
    needs = [times.cpu_estimate(c) for c in missing]
    known = [n for n in needs if n is not None]
    line = f"  CPU time: {len(took)} of {len(finished)} finished cells measured it, {sum(took) / 3600:.2f} h in all"
    if missing:
        line += (f"; the {len(known)} missing cells with a similar measured cell need about {sum(known) / 3600:.2f} h"
                 + (f" ({len(needs) - len(known)} have none)" if len(known) < len(needs) else ""))
    return [line]


def _collapsed_lines(grid: Grid, finished: list[Cell]) -> list[str]:
    """The finished cells the report flags as collapsed (report/collapse.py), each with its reasons."""
    from ..report.collapse import collapsed_cells  # here: scikit-learn and pandas load for `status` alone

    settings = grid.settings()
    flagged = collapsed_cells(grid.root / settings.paths.results, finished)
    if not flagged:
        return []
    lines = [f"collapsed ({len(flagged)} of {len(finished)} finished; kept in the report's means, "
             f"{settings.paths.reports}/results.md lists them):"]
    return lines + [f"  {c.name}: {'; '.join(reasons)}" for c, reasons in flagged.items()]


def _stale(grid: Grid, finished: set[Cell]) -> tuple[list[str], list[str]]:
    """The finished cells whose recorded code or data changed since, and those whose only difference is data
    this clone does not hold yet (a fresh clone before its data stages run): that says nothing of a change."""
    if not finished:
        return [], []
    data = Path(grid.settings().paths.data).parts
    changed = dvc_status(grid.root, [grid.target(c.stage) for c in sorted(finished, key=str)])
    stale, absent = [], []
    for name, what in changed.items():
        deps = {path: how for w in what if isinstance(w, dict) for path, how in w.get("changed deps", {}).items()}
        if not deps:
            continue
        missing_data = all(how == "deleted" and Path(path).parts[:len(data)] == data for path, how in deps.items())
        (absent if missing_data else stale).append(name)
    return stale, absent


def _budget(text: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip() or (len(parts) > 1 and any(not u for _, u in parts)):
        raise argparse.ArgumentTypeError(f"a budget is a number of seconds, or with h, m and s (2h30m, 90m, 45s): "
                                         f"{text!r}")
    return sum(float(n) * {"": 1, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


def _worker(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"--worker is I/N with 1 <= I <= N, e.g. 2/8: {text!r}")
    return int(m.group(1)), int(m.group(2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill_step_by_step.grid", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("init", help="write grids/<profile>/ from params.yaml and profiles/<profile>.yaml").add_argument("profile")
    w = sub.add_parser("work", help="run one worker's share of the grid")
    a = sub.add_parser("assemble", help="restore every finished cell from the remote, build the report, keep them")
    s = sub.add_parser("status", help="finished and missing cells, with estimates")
    r = sub.add_parser("report", help="rebuild the report from the cells the repository keeps (trains nothing)")
    k = sub.add_parser("keep", help="push the finished cells' small outputs into the repository's store")
    c = sub.add_parser("commit", help="record this checkout's code in the lock for every stage it holds "
                                      "(after a refactor shown to change no number)")
    h = sub.add_parser("headline", help="print the README's headline table of each student from the committed "
                                        "report (trains and runs nothing)")
    for p in (w, a, s, r, k, c, h):
        p.add_argument("profile", help=f"a profile with a grid under grids/, or {DEFAULT} (the repository's own pipeline)")
    for p in (w, a):
        p.add_argument("--remote", help="a DVC remote URL or folder the workers share (none: this clone alone)")
        p.add_argument("--create-remote", action="store_true",
                       help="make the remote folder if it is missing or empty (else that is refused: a moved or "
                            "unmounted folder would silently split the cells)")
    w.add_argument("--worker", type=_worker, default=(1, 1), help="I/N: this worker's share of N (default 1/1)")
    w.add_argument("--budget", type=_budget, help="start no cell that cannot finish within this (e.g. 9m, 2h)")
    w.add_argument("--carry-times", type=Path, metavar="FILE",
                   help="cell times an earlier run of this clone measured, to merge first (launch/worker.sh)")
    for p in (w, s):
        p.add_argument("--guess-minutes", type=float, default=GUESS_MINUTES,
                       help="estimate for a cell of a kind not measured yet (default %(default)s)")
    args = ap.parse_args(argv)
    grid = Grid(None if args.profile == DEFAULT else args.profile)
    try:
        if args.action == "init":
            init(args.profile)
            print(f"wrote {grid.folder}/: params.yaml, dvc.yaml (a copy of {PIPELINE})")
        elif args.action == "work":
            remote = resolve_remote(args.remote, args.create_remote) if args.remote else None
            if args.carry_times:
                carry_times(grid, args.carry_times)
            result = work(grid, remote, *args.worker, args.budget, args.guess_minutes)
            return 1 if result["failed"] or result["unpushed"] else 0
        elif args.action == "assemble":
            still = assemble(grid, resolve_remote(args.remote, args.create_remote) if args.remote else None)
            print("\n".join(status_lines(grid)))
            print(f"\nto keep them: git add {grid.folder} {grid.settings().paths.results} "
                  f"{grid.settings().paths.reports} {STORE} && git commit")
            return 0 if len(still) < len(grid.cells()) else 1
        elif args.action == "report":
            report(grid)
        elif args.action == "keep":
            keep(grid)
        elif args.action == "headline":
            from ..report.headline import headline_table  # pandas loads for this command alone

            settings = grid.settings()
            for dataset in settings.grid.datasets:
                for student in settings.grid.students:
                    print(f"<!-- headline: {args.profile} {dataset} {student} -->\n"
                          f"{headline_table(grid.root / settings.paths.reports, dataset, student)}\n<!-- /headline -->")
        elif args.action == "commit":
            names, left = commit_code(grid)
            print(f"{grid.folder / 'dvc.lock'}: {len(names)} stages record this checkout's code")
            for name, why in left.items():
                print(f"  left as it is: {name}: {why}")
        else:
            restore_kept(grid)  # a fresh clone has the lock, and the cells' files in the store
            print("\n".join(status_lines(grid, args.guess_minutes)))
    except (StageError, ValueError) as exc:
        print(f"grid: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a folder that cannot be written: one line
        print(f"grid: error: {exc.strerror or exc} ({exc.filename or 'no file named'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("grid: stopped (Ctrl-C); a cell in training resumes from its saved state when the worker runs again",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
