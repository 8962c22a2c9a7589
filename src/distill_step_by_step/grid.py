"""A profile's grid as its own DVC pipeline, built by many workers through a DVC remote, kept in this repository.

``grids/<profile>/`` holds a grid's pipeline: ``dvc.yaml`` (a copy of the repository's one ``dvc.yaml``),
``params.yaml`` (``params.yaml`` with ``profiles/<profile>.yaml`` applied and the grid's own paths: made
by ``init``, checked against its sources by the tests), ``dvc.lock`` (what DVC ran, stage by stage) and
``cell_times.json`` (measured seconds per cell, for budgets). Its results go to ``results/<profile>/``
(DVC-cached, kept in the repository's ``store`` remote) and its report to ``reports/<profile>/`` (git),
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
* ``status`` lists finished and missing cells, and the time the missing ones are estimated to need.

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
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cell import ASSEMBLE_ENV, CURVE_FILE, GRIDS_DIR as GRIDS, METRICS_FILE, PREDICTIONS_FILE, RECORD_FILE, WORKER_ENV, Cell
from .errors import StageError
from .profiles import apply_profile, load_profile
from .settings import Settings, parse_settings, read_params

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
        return [Cell(d, m, s, str(f), seed) for d, m, s, f, seed in self.settings().grid.cells()]

    def locked(self) -> dict[str, dict[str, Any]]:
        """The stages this pipeline's ``dvc.lock`` records, by name."""
        path = self.folder / "dvc.lock"
        return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.is_file() else {}

    def finished(self) -> set[Cell]:
        """The cells the lock records whose results are in place."""
        settings, locked = self.settings(), self.locked()
        return {c for c in self.cells()
                if c.stage in locked and (self.root / c.results_dir(settings.paths.results) / METRICS_FILE).is_file()}

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
    """Measured seconds per cell (``grids/<profile>/cell_times.json`` and this run's own), and estimates."""

    seconds: dict[str, float] = field(default_factory=dict)  # cell name -> seconds
    guess: float = GUESS_MINUTES * 60

    @classmethod
    def load(cls, grid: Grid, guess_minutes: float = GUESS_MINUTES) -> "CellTimes":
        path = grid.times_path()
        data = json.loads(path.read_text()) if path.is_file() else {}
        return cls({k: float(v["seconds"]) for k, v in data.items()}, guess_minutes * 60)

    def estimate(self, cell: Cell) -> float:
        """Seconds the cell should take: the median of the most similar measured cells (same dataset, method
        and student; else same method and student; else same student), with a margin; else the guess."""
        def like(keep: tuple[int, ...]) -> list[float]:
            want = [cell.name.split("/")[i] for i in keep]
            return [s for name, s in self.seconds.items() if [name.split("/")[i] for i in keep] == want]

        for keep in ((0, 1, 2), (1, 2), (2,)):
            if found := like(keep):
                return SAFETY * statistics.median(found)
        return self.guess


def record_times(grid: Grid, times: dict[str, float]) -> None:
    """Merge measured cell times into ``grids/<profile>/cell_times.json``."""
    path = grid.times_path()
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update({name: {"seconds": round(s, 1)} for name, s in times.items()})
    path.write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")


def gather_worker_times(grid: Grid) -> None:
    """Merge the cell times that this host's workers measured (``launch/worker.sh`` clones in
    ``$DSS_WORKDIR``, default ``.workers/``) into this repository's ``cell_times.json``, for later budgets."""
    workdir = Path(os.environ.get("DSS_WORKDIR") or grid.root / ".workers")
    inside = grid.times_path().relative_to(grid.root).as_posix()
    for path in sorted(workdir.glob(f"{grid.name}-*/{inside}")):
        record_times(grid, {k: v["seconds"] for k, v in json.loads(path.read_text()).items()})


def trained_since(grid: Grid, cell: Cell, since: float) -> bool:
    """Whether the cell's run log has a finished training run since ``since`` (wall clock): the cell was
    trained here, not restored from the run-cache."""
    from .runlog import read_events

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


def use_remote(url: str) -> None:
    """Make ``url`` (any DVC remote: a folder, s3://, ssh://, ...) this clone's default remote, named ``grid``
    (local config: nothing committed); ``dvc repro --pull`` fetches what a restored cell needs from it."""
    if "://" not in url:
        url = str(Path(url).resolve())
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
    report: dict[str, list[str]] = {"done": [], "trained": [], "not_started": [], "failed": []}
    for cell in todo:
        left = None if budget_seconds is None else budget_seconds - (time.monotonic() - started)
        estimate = times.estimate(cell)
        if left is not None and estimate > left:
            print(f"  not starting {cell.name}: estimated {estimate:.0f} s, {max(left, 0):.0f} s of the budget left",
                  flush=True)
            report["not_started"].append(cell.name)
            continue
        t0, wall = time.monotonic(), time.time()
        repro = ["repro", *(["--pull"] if remote else []), "-s", grid.target(cell.stage)]
        if dvc(*repro, env={WORKER_ENV: f"{worker}/{workers}"}, check=False) != 0:
            report["failed"].append(cell.name)
            continue
        if trained_since(grid, cell, wall):  # a cell restored from the run-cache says nothing of its cost
            times.seconds[cell.name] = time.monotonic() - t0  # the whole stage: start-up and test included
            report["trained"].append(cell.name)
        report["done"].append(cell.name)
        if remote:  # at once: a worker stopped after this loses nothing it finished
            dvc("push", "-q", "--run-cache", "-r", REMOTE_NAME, grid.target(cell.stage))
    record_times(grid, {c: times.seconds[c] for c in report["trained"]})
    print(f"worker {worker}/{workers}: {len(report['done'])} cells done ({len(report['trained'])} trained here), "
          f"{len(report['not_started'])} not started "
          f"(budget), {len(report['failed'])} failed, in {time.monotonic() - started:.0f} s", flush=True)
    return report


def assemble(grid: Grid, remote: str | None) -> list[Cell]:
    """Restore every cell finished in the remote into this pipeline (training none), build the report and
    keep the cells' small outputs in the repository's store; returns the cells still missing."""
    prepare(grid, remote)
    restore_kept(grid)
    gather_worker_times(grid)
    missing = [c for c in grid.cells() if c not in grid.finished()]
    if missing:
        dvc("repro", *(["--pull"] if remote else []), "-s", "--keep-going", *[grid.target(c.stage) for c in missing],
            env={ASSEMBLE_ENV: "1"}, check=False)
    finished = grid.finished()
    if finished:
        dvc("repro", "-s", grid.target("report"))
        keep(grid)
    return [c for c in grid.cells() if c not in finished]


def keep(grid: Grid) -> None:
    """Push the finished cells' small outputs into the repository's DVC remote ``store`` (commit it with git)."""
    dvc("push", "-q", "-r", STORE, *grid.kept_outputs(grid.finished()))


def restore_kept(grid: Grid) -> None:
    """Bring from the repository's store the small outputs of every cell the lock records but the workspace
    lacks (a fresh clone has the lock, not the files), so that it counts as finished and no worker trains
    it again."""
    settings, locked = grid.settings(), grid.locked()
    absent = [c for c in grid.cells() if c.stage in locked
              and not (grid.root / c.results_dir(settings.paths.results) / METRICS_FILE).is_file()]
    if absent:
        dvc("pull", "-q", "-r", STORE, *grid.kept_outputs(absent), check=False, quiet=True)


def report(grid: Grid) -> None:
    """Rebuild the grid's report from what the repository keeps, training nothing: the cells' small outputs
    come from the store, and only the ``report`` stage runs (``dvc repro -s``)."""
    restore_kept(grid)
    dvc("repro", "-s", grid.target("report"))


def status_lines(grid: Grid, guess_minutes: float = GUESS_MINUTES) -> list[str]:
    """Finished and missing cells by (dataset, method, student, fraction) with their seeds, and estimates."""
    cells, finished, times = grid.cells(), grid.finished(), CellTimes.load(grid, guess_minutes)
    missing = [c for c in cells if c not in finished]
    need = sum(times.estimate(c) for c in missing)
    lines = [f"grid {grid.profile}: {len(finished)} of {len(cells)} cells finished, {len(missing)} missing "
             f"(estimated {need / 3600:.2f} h of one worker)"]
    stale = _stale(grid, finished)
    if stale:
        lines.append(f"  {len(stale)} finished cells were made by code or data that changed since (`dvc status "
                     f"{grid.pipeline}`); they are kept")
    for title, group in (("finished", [c for c in cells if c in finished]), ("missing", missing)):
        lines.append(f"{title}:")
        by: dict[tuple[str, str, str, str], list[Cell]] = defaultdict(list)
        for c in group:
            by[(c.dataset, c.method, c.student, c.fraction)].append(c)
        for (d, m, s, f), cs in by.items():
            seeds = " ".join(str(c.seed) for c in cs)
            est = f"  (~{times.estimate(cs[0]) / 60:.1f} min each)" if title == "missing" else ""
            lines.append(f"  {d:6} {m:13} {s:14} {100 * float(f):>5.4g}%  seeds {seeds}{est}")
    return lines


def _stale(grid: Grid, finished: set[Cell]) -> list[str]:
    if not finished:
        return []
    proc = subprocess.run(["dvc", "status", "--json", *[grid.target(c.stage) for c in sorted(finished, key=str)]],
                          capture_output=True, text=True)
    try:
        changed = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        return []
    return [name for name, what in changed.items() if any("changed deps" in w for w in what if isinstance(w, dict))]


def _budget(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"a budget is a number of seconds, or with s, m or h: {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


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
    for p in (w, a, s, r, k):
        p.add_argument("profile", help=f"a profile with a grid under grids/, or {DEFAULT} (the repository's own pipeline)")
    for p in (w, a):
        p.add_argument("--remote", help="a DVC remote URL or folder the workers share (none: this clone alone)")
    w.add_argument("--worker", type=_worker, default=(1, 1), help="I/N: this worker's share of N (default 1/1)")
    w.add_argument("--budget", type=_budget, help="start no cell that cannot finish within this (e.g. 9m, 2h)")
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
            result = work(grid, args.remote, *args.worker, args.budget, args.guess_minutes)
            return 1 if result["failed"] else 0
        elif args.action == "assemble":
            still = assemble(grid, args.remote)
            print("\n".join(status_lines(grid)))
            print(f"\nto keep them: git add {grid.folder} {grid.settings().paths.results} "
                  f"{grid.settings().paths.reports} {STORE} && git commit")
            return 0 if len(still) < len(grid.cells()) else 1
        elif args.action == "report":
            report(grid)
        elif args.action == "keep":
            keep(grid)
        else:
            print("\n".join(status_lines(grid, args.guess_minutes)))
    except (StageError, ValueError) as exc:
        print(f"grid: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
