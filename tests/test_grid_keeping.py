"""Nothing lost across workers, remotes and the store (real DVC, real clones, real processes and signals)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill_step_by_step.errors import StageError
from distill_step_by_step.ops.grid import _budget
from distill_step_by_step.ops.remotes import MARK, entry_fits, md5_of, resolve_remote, store_faults

from conftest import GIT, copy_project, finished_events, run, worker_env

GRID = [sys.executable, "-m", "distill_step_by_step.grid"]

# Three tiny cells of ANLI-R1 (a T5 built in code, 20 steps): seconds each.
TINY = {
    "data": {"datasets": ["anli1"]},
    "split": {"valid_size": 10, "pool_size": 60, "test_size": 20},
    "grid": {"datasets": ["anli1"], "methods": ["finetune"], "students": ["tiny-t5"], "fractions": [0.5, 1.0],
             "seeds": [0, 1]},
    "train": {"lr": 1.0e-2, "lr_new_params": None, "warmup_steps": 0, "batch_size": 8, "max_steps": 20,
              "eval_every": 10, "max_input_tokens": 64, "max_target_tokens": 32, "freeze_embeddings": False,
              "dropout": None, "output_vocabulary": "all"},
    "run": {"valid_batch_size": 32, "keep_weights": False},
}


def _tiny_project(root: Path) -> Path:
    repo = copy_project(root)
    (repo / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run([*GRID, "init", "tiny"], repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "tiny grid"], repo)
    return repo


def _grid(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GRID, *args], cwd=repo, capture_output=True, text=True, env=worker_env(**kw), timeout=900)


# ----- quick checks of the pieces -----

def test_a_budget_reads_hours_minutes_and_seconds_together_and_refuses_anything_else():
    assert _budget("2h24m") == 8640 and _budget("90") == 90 and _budget("1.5h") == 5400 and _budget("1m30s") == 90
    for bad in ("2h3", "h", "2x", "-5m", ""):
        with pytest.raises(Exception, match="a budget is"):
            _budget(bad)


def test_a_local_remote_must_be_there_unless_created_and_a_relative_one_resolves_where_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match="does not exist: refusing .* add --create-remote"):
        resolve_remote("shared/remote")
    (tmp_path / "mount").mkdir()
    with pytest.raises(StageError, match="is empty \\(an unmounted share\\?\\)"):
        resolve_remote("mount")
    made = resolve_remote("shared/remote", create=True)
    assert made == str(tmp_path / "shared" / "remote") and (tmp_path / "shared" / "remote" / MARK).is_file()
    monkeypatch.chdir(tmp_path / "mount")  # elsewhere, the same folder by its absolute path, no mark needed again
    assert resolve_remote(made) == made
    assert resolve_remote("s3://bucket/grid") == "s3://bucket/grid"


def test_the_store_check_names_a_missing_or_damaged_object_and_a_dir_listing_member(tmp_path):
    store = tmp_path / "store"

    def put(data: bytes, suffix: str = "") -> str:
        import hashlib
        md5 = hashlib.md5(data).hexdigest()
        obj = store / "files" / "md5" / md5[:2] / (md5[2:] + suffix)
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
        return md5 + suffix

    metrics = put(b'{"accuracy": 0.5}')
    config = put(b'{"model_type": "t5"}')
    listing = put(json.dumps([{"md5": config, "relpath": "config.json"}]).encode(), ".dir")
    outs = {"r/metrics.json": (metrics, "cell-a"), "m/cell-a": (listing, "cell-a")}
    assert store_faults(store, outs) == []
    obj = store / "files" / "md5" / config[:2] / config[2:]
    obj.write_bytes(b'{"model_type": "t6"}')
    assert store_faults(store, outs) == [f"cell-a: m/cell-a/config.json: object {obj} is damaged "
                                         "(its content does not match its hash)"]
    obj.unlink()
    assert store_faults(store, outs) == [f"cell-a: m/cell-a/config.json: object {obj} is missing"]


def test_a_run_cache_entry_fits_when_settings_and_data_match_whatever_its_code(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.ids").write_text("a\nb\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    params = {"train": {"lr": 0.1, "max_steps": 20}, "students": {"s": {"kind": "t5"}}}
    entry = {"deps": [{"path": "data/train.ids", "md5": md5_of(tmp_path / "data" / "train.ids")},
                      {"path": "src/code.py", "md5": "0" * 32}],  # older code
             "params": {"p.yaml": {"train": {"lr": 0.1, "max_steps": 20}, "students.s": {"kind": "t5"}}}}
    assert entry_fits(entry, tmp_path, params)
    assert not entry_fits(entry, tmp_path, {**params, "train": {"lr": 0.2, "max_steps": 20}})  # other settings
    (tmp_path / "data" / "train.ids").write_text("a\nc\n")
    assert not entry_fits(entry, tmp_path, params)  # other data


# ----- workers, remotes and the store, end to end -----

@pytest.mark.slow
def test_cells_that_were_not_pushed_are_pushed_later_and_cells_of_older_code_are_kept_not_retrained(tmp_path):
    repo = _tiny_project(tmp_path)
    remote = tmp_path / "remote"
    refused = _grid(repo, "work", "tiny", "--remote", str(remote))
    assert refused.returncode == 1 and "does not exist" in refused.stderr and not remote.exists()
    assert refused.stderr.count("\n") == 1  # one line

    remote.mkdir()
    (remote / "files").write_text("not a folder: every push fails\n")  # a remote that takes no pushes
    first = _grid(repo, "work", "tiny", "--remote", str(remote), DSS_PUSH_BACKOFF="0")
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "4 cells done (4 trained here)" in first.stdout and "4 not pushed" in first.stdout
    assert "cells not pushed to" in first.stdout and "ERROR" in first.stdout  # DVC's own reason
    assert sorted(finished_events(repo).values()) == [1, 1, 1, 1]

    (remote / "files").unlink()  # the remote takes pushes again: the next run pushes what it holds
    (remote / MARK).write_text("")
    second = _grid(repo, "work", "tiny", "--remote", str(remote))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "0 cells to do (4 of the grid already finished)" in second.stdout and "0 not pushed" in second.stdout
    assert sorted(finished_events(repo).values()) == [1, 1, 1, 1]

    # another machine, whose code has changed since (a comment: DVC's run-cache no longer matches), assembles
    third = copy_project(tmp_path / "third")
    (third / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run([*GRID, "init", "tiny"], third)
    with (third / "src" / "distill_step_by_step" / "train" / "training.py").open("a") as fh:
        fh.write("# a comment changes no number\n")
    assembled = _grid(third, "assemble", "tiny", "--remote", str(remote))
    assert assembled.returncode == 0, assembled.stdout[-3000:] + assembled.stderr[-3000:]
    assert "grid tiny: 4 of 4 cells finished" in assembled.stdout and finished_events(third) == {}
    assert "4 finished cells were made by code or data that changed since" in assembled.stdout
    # recorded from the run-cache, their files are DVC's, kept from git as those of a cell trained here
    seen = run(["git", "status", "--porcelain", "--untracked-files=all", "results"], third).stdout.split()
    assert seen and {Path(p).name for p in seen[1::2]} == {".gitignore"}, seen
    # and a worker there trains none of them again
    again = _grid(third, "work", "tiny", "--remote", str(remote))
    assert again.returncode == 0 and "0 cells to do" in again.stdout and finished_events(third) == {}


@pytest.mark.slow
def test_a_killed_worker_process_whose_cell_finished_after_it_pushes_that_cell_on_its_next_start(tmp_path):
    """Only the `grid work` process is killed (SIGKILL); its `dvc repro` lives on and finishes the cell."""
    repo = _tiny_project(tmp_path)
    remote = tmp_path / "remote"
    proc = subprocess.Popen([*GRID, "work", "tiny", "--remote", str(remote), "--create-remote"], cwd=repo,
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = repo / "logs" / "models" / "tiny" / "anli1" / "finetune" / "tiny-t5" / "f0.5-s0" / "runs.jsonl"
    deadline = time.time() + 600
    while not log.is_file():  # the first cell is training
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = repo / "grids" / "tiny" / "dvc.lock"
    while "train_score@anli1-finetune-tiny-t5-0.5-0" not in (lock.read_text() if lock.is_file() else ""):
        assert time.time() < deadline  # the orphaned dvc repro finishes the cell
        time.sleep(0.2)
    time.sleep(2)  # DVC writes its run-cache entry and lets go of the lock
    assert not list(remote.glob("runs/*/*/*"))  # never pushed
    out = _grid(repo, "work", "tiny", "--remote", str(remote), "--budget", "1s")  # starts no cell
    assert out.returncode == 0 and "push --run-cache -r grid (1 cells)" in out.stdout, out.stdout[-3000:]
    other = copy_project(tmp_path / "other")
    (other / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run([*GRID, "init", "tiny"], other)
    assembled = _grid(other, "assemble", "tiny", "--remote", str(remote))
    assert "grid tiny: 1 of 4 cells finished" in assembled.stdout and finished_events(other) == {}


@pytest.mark.slow
def test_a_worker_clone_left_with_unpushed_cells_moves_to_new_code_and_keeps_its_cells_and_times(tmp_path):
    """launch/worker.sh on a clone whose earlier run, at older code, changed its lock and times and could not
    push: the clone moves to the new commit, trains nothing again, pushes those cells and keeps their times."""
    repo = _tiny_project(tmp_path)
    times_path = repo / "grids" / "tiny" / "cell_times.json"
    times_path.write_text(json.dumps({"anli1/finetune/tiny-t5/f1.0-s1": {"seconds": 99.0}}))  # an older measure
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "times"], repo)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / MARK).write_text("")
    (remote / "files").write_text("not a folder: every push fails\n")
    worker = [str(repo / "launch" / "worker.sh"), "tiny", str(remote), "1/2"]
    first = subprocess.run(worker, cwd=tmp_path, capture_output=True, text=True, env=worker_env(DSS_PUSH_BACKOFF="0"),
                           timeout=900)
    clone = repo / ".workers" / "tiny-1"
    assert first.returncode == 1 and "2 not pushed" in first.stdout, first.stdout[-3000:] + first.stderr[-3000:]
    times = json.loads((clone / "grids" / "tiny" / "cell_times.json").read_text())
    assert len(times) == 3 and run([*GIT, "status", "--porcelain"], clone).stdout  # files changed in the clone

    with (repo / "src" / "distill_step_by_step" / "training.py").open("a") as fh:
        fh.write("# a comment changes no number\n")
    other_worker = {"anli1/finetune/tiny-t5/f1.0-s1": {"seconds": 12.5}}  # newer, assembled from another worker
    times_path.write_text(json.dumps(other_worker))
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "newer code, another worker's times"], repo)
    (remote / "files").unlink()  # the remote takes pushes again
    second = subprocess.run(worker, cwd=tmp_path, capture_output=True, text=True, env=worker_env(), timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    head = run(["git", "rev-parse", "HEAD"], repo).stdout
    assert run(["git", "rev-parse", "HEAD"], clone).stdout == head  # on the new code
    assert "recorded 2 finished cells from the run-cache" in second.stdout and "0 not pushed" in second.stdout
    assert sorted(finished_events(clone).values()) == [1, 1]  # trained once
    kept = json.loads((clone / "grids" / "tiny" / "cell_times.json").read_text())
    assert kept == {**times, **other_worker} and not (clone / ".dvc" / "tmp" / "carried_cell_times.json").exists()
    other = copy_project(tmp_path / "other")
    (other / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run([*GRID, "init", "tiny"], other)
    assembled = _grid(other, "assemble", "tiny", "--remote", str(remote))
    assert "grid tiny: 2 of 4 cells finished" in assembled.stdout and finished_events(other) == {}


@pytest.mark.slow
def test_a_remote_moved_away_mid_run_stops_the_worker_and_is_not_recreated(tmp_path):
    repo = _tiny_project(tmp_path)
    remote, moved = tmp_path / "remote", tmp_path / "moved"
    proc = subprocess.Popen([str(repo / "launch" / "worker.sh"), "tiny", "remote", "1/1", "--create-remote"],
                            cwd=tmp_path, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # the first cell is pushed once the second starts
        seen.append(line)
        if "+ dvc repro --pull -s grids/tiny/dvc.yaml:train_score@anli1-finetune-tiny-t5-1.0-0" in line:
            break
    assert list(remote.glob("runs/*/*/*")), "".join(seen)[-3000:]  # a relative path, resolved where it was given
    remote.rename(moved)
    out = "".join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 1 and "has gone (moved, deleted or unmounted)" in out, out[-3000:]
    assert not remote.exists() and list(moved.glob("runs/*/*/*"))


@pytest.mark.slow
def test_a_damaged_store_object_is_named_kept_and_stops_report_and_status(tmp_path):
    repo = copy_project(tmp_path, committed_grids=True)
    status = run([*GRID, "status", "smoke"], repo).stdout  # a fresh clone: restored from the store first
    assert "grid smoke: 12 of 12 cells finished, 0 missing" in status

    repo = copy_project(tmp_path / "second", committed_grids=True)
    lock = yaml.safe_load((repo / "grids" / "smoke" / "dvc.lock").read_text())["stages"]
    out = next(o for o in lock["train_score@anli1-distill-tiny-t5-1.0-1"]["outs"] if o["path"].endswith("metrics.json"))
    obj = repo / "store" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
    damaged = bytearray(obj.read_bytes())
    damaged[5] ^= 0x01
    obj.write_bytes(bytes(damaged))
    before = {p: p.read_bytes() for p in [*(repo / "reports" / "smoke").rglob("*.md"), repo / "grids" / "smoke" / "dvc.lock"]}
    for action in ("report", "status"):
        proc = _grid(repo, action, "smoke")
        assert proc.returncode == 1 and "anli1/distill/tiny-t5/f1.0-s1" in proc.stderr, proc.stderr
        assert "metrics.json" in proc.stderr and "is damaged" in proc.stderr and proc.stderr.count("\n") == 1
    assert obj.read_bytes() == bytes(damaged)  # kept, as it was
    assert {p: p.read_bytes() for p in before} == before
    assert run(["git", "status", "--porcelain", "store", "grids", "reports"], repo).stdout == f" M {obj.relative_to(repo)}\n"


@pytest.mark.slow
def test_cells_made_under_settings_the_grid_no_longer_has_count_missing_and_are_trained_again_once(tmp_path):
    repo = _tiny_project(tmp_path)
    first = _grid(repo, "work", "tiny")
    assert first.returncode == 0 and "4 cells done (4 trained here)" in first.stdout, first.stdout[-3000:]
    results = repo / "results" / "tiny" / "anli1" / "finetune" / "tiny-t5" / "f1.0-s0"
    then = (results / "metrics.json").read_bytes()

    (repo / "profiles" / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "max_steps": 30}}))
    run([*GRID, "init", "tiny"], repo)
    status = _grid(repo, "status", "tiny")
    assert "grid tiny: 0 of 4 cells finished, 4 missing" in status.stdout, status.stdout
    assert "4 cells were made with settings this grid no longer has (first: anli1/finetune/tiny-t5/f0.5-s0: " \
           "train.max_steps: 20 -> 30): counted missing" in status.stdout
    assert (results / "metrics.json").read_bytes() == then  # status changes nothing

    again = _grid(repo, "work", "tiny")
    assert again.returncode == 0 and "4 cells done (4 trained here)" in again.stdout, again.stdout[-3000:]
    assert "4 cells were made with settings this grid no longer has" in again.stdout
    assert json.loads((results / "student.json").read_text())["train_config"]["max_steps"] == 30
    assert sorted(finished_events(repo).values()) == [2, 2, 2, 2]  # once under each setting
    third = _grid(repo, "work", "tiny")
    assert "0 cells to do (4 of the grid already finished)" in third.stdout and "no longer has" not in third.stdout
