"""Shared fixtures: the real mirror archive, prepared data, and throwaway copies of this repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = (REPO / ".." / "shared" / "datasets" / "dss-datasets.zip").resolve()

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Stage commands say `python` and `dvc`: make them this interpreter's, however pytest was started.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The authors' archive mirror that lives beside the checkout (never copied into the repo)."""
    if not MIRROR.is_file():
        pytest.fail(f"the dataset mirror is missing: {MIRROR} (clone the repo beside ../shared)")
    return MIRROR


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """All four datasets prepared once from the real mirror."""
    from distill_step_by_step.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare(str(mirror), out, ["cqa", "svamp", "esnli", "anli1"])
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory, prepared: Path) -> Path:
    """The recorded-PaLM rationale corpora of all four datasets."""
    from distill_step_by_step.teachers.annotate import annotate_recorded

    out = tmp_path_factory.mktemp("corpus")
    for name in ("cqa", "svamp", "esnli", "anli1"):
        annotate_recorded(prepared, name, out / name)
    return out


def run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def worker_env(**extra: str) -> dict[str, str]:
    """The environment a grid worker's clone needs in a test: this venv for ``launch/worker.sh`` and a git user."""
    git_user = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER") for what, value in (("NAME", "t"), ("EMAIL", "t@t"))}
    return {**os.environ, "DSS_VENV": str(Path(sys.executable).parents[1]), **git_user, **extra}


def finished_events(clone: Path) -> dict[str, int]:
    """How many finished training runs each cell's run log records in a clone."""
    counts: dict[str, int] = {}
    for log in clone.glob("logs/**/runs.jsonl"):
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "finished":
                counts[event["cell"]] = counts.get(event["cell"], 0) + 1
    return counts


def copy_project(dest_root: Path, committed_grids: bool = False) -> Path:
    """A fresh git+DVC repository holding this project's files (as they are in the working tree, so that a
    test sees uncommitted changes too), with ``../shared`` beside it and the corpora archive in DVC's cache.

    Without ``committed_grids`` it starts with no pipeline run: no ``dvc.lock``, no committed results (the
    corpora archive's ``.dvc`` file and the grids' params are kept). With it, it is what a fresh clone is."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    repo = dest_root / "repo"
    for rel in filter(None, files):
        src = REPO / rel
        kept = rel.startswith(("data/raw/", "data/tasks/")) or rel.endswith(".gitignore") or rel.startswith("grids/")
        run_output = rel.startswith(("data/", "models/", "results/", "store/")) or rel.endswith("dvc.lock")
        if not (src.is_file() or src.is_symlink()) or (run_output and not kept and not committed_grids):
            continue
        if not committed_grids and rel.startswith("grids/") and rel.endswith(("dvc.lock", "cell_times.json")):
            continue
        dst = repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    (dest_root / "shared").symlink_to(MIRROR.parent.parent, target_is_directory=True)
    run(["git", "init", "-q"], repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "init"], repo)
    run(["dvc", "update", "-q", "data/raw/dss-datasets.zip.dvc"], repo)  # what `make data` does in a new clone
    return repo


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throwaway copy of the repository to run real ``dvc`` commands in."""
    return copy_project(tmp_path)
