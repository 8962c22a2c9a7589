"""Grids built by many workers through a DVC remote (real DVC, real clones, real processes and signals)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill_step_by_step.errors import StageError
from distill_step_by_step.ops.grid import GRIDS_DIR, CellTimes, Grid, out_of_date, points, record_times, share
from distill_step_by_step.train.cell import Cell, check_may_train

from conftest import GIT, REPO, copy_project, finished_events, run, worker_env

VENV = Path(sys.executable).parents[1]
GRID = [sys.executable, "-m", "distill_step_by_step.grid"]


@pytest.mark.parametrize("profile", sorted(p.name for p in (REPO / GRIDS_DIR).iterdir()))
def test_every_grid_matches_the_params_and_profile_it_is_made_from(profile):
    assert out_of_date(profile, REPO) is None


def test_shares_are_disjoint_whole_comparison_points_in_grid_order():
    cells = Grid("gpu", REPO).cells()
    assert len(cells) == 288 and len(points(cells)) == 32
    shares = [share(cells, i, 5) for i in range(1, 6)]
    assert sorted(c.name for s in shares for c in s) == sorted(c.name for c in cells)  # every cell, once
    for s in shares:
        mine = [(c.dataset, c.student, c.fraction) for c in s]
        # each point whole (3 methods x 3 seeds) and contiguous: a run completes whole points first
        assert all(mine.count(p) == 9 for p in set(mine))
        assert [p for i, p in enumerate(mine) if i == 0 or mine[i - 1] != p] == list(dict.fromkeys(mine))
    assert sorted(share(cells, 1, 1), key=str) == sorted(cells, key=str)
    with pytest.raises(ValueError, match="worker 6 of 5"):
        share(cells, 6, 5)


def test_estimates_come_from_the_most_similar_measured_cells_else_a_long_guess():
    times = CellTimes({"esnli/finetune/smollm2-135m/f0.5-s0": 100.0, "esnli/finetune/smollm2-135m/f1.0-s0": 120.0,
                       "cqa/step_by_step/gemma3-270m/f0.5-s0": 400.0}, guess=1800.0)
    assert times.estimate(Cell("esnli", "finetune", "smollm2-135m", 0.25, 1)) == pytest.approx(1.25 * 110)
    assert times.estimate(Cell("anli1", "finetune", "smollm2-135m", 0.25, 1)) == pytest.approx(1.25 * 110)
    assert times.estimate(Cell("anli1", "distill", "gemma3-270m", 0.25, 1)) == pytest.approx(1.25 * 400)
    assert times.estimate(Cell("anli1", "distill", "minilm-l6", 0.25, 1)) == 1800.0


def test_cpu_time_is_read_where_cells_recorded_it_and_estimated_from_those_alone(tmp_path):
    grid = Grid("smoke", tmp_path)
    grid.folder.mkdir(parents=True)
    grid.times_path().write_text(json.dumps({  # an older entry has wall time only
        "esnli/finetune/minilm-l6-d1/f0.5-s0": {"seconds": 300.0},
        "esnli/finetune/minilm-l6-d1/f0.5-s1": {"seconds": 500.0, "cpu_seconds": 200.0},
        "esnli/finetune/minilm-l6-d1/f0.5-s2": {"seconds": 700.0, "cpu_seconds": 260.0}}))
    times = CellTimes.load(grid)
    assert times.estimate(Cell("esnli", "finetune", "minilm-l6-d1", 1.0, 0)) == pytest.approx(1.25 * 500)
    assert times.cpu_estimate(Cell("esnli", "finetune", "minilm-l6-d1", 1.0, 0)) == pytest.approx(230)
    assert times.cpu_estimate(Cell("esnli", "finetune", "minilm-l3-d1", 1.0, 0)) is None
    record_times(grid, {"esnli/distill/minilm-l3-d1/f1.0-s0": {"seconds": 12.345, "cpu_seconds": 11.98}})
    kept = json.loads(grid.times_path().read_text())
    assert kept["esnli/distill/minilm-l3-d1/f1.0-s0"] == {"seconds": 12.3, "cpu_seconds": 12.0}
    assert kept["esnli/finetune/minilm-l6-d1/f0.5-s0"] == {"seconds": 300.0}


def test_a_grid_cell_trains_only_under_a_worker_and_never_under_an_assembly(monkeypatch):
    cell = Cell("anli1", "finetune", "tiny-t5", 0.5, 0)
    for var in ("DSS_WORKER", "DSS_ASSEMBLE"):
        monkeypatch.delenv(var, raising=False)
    check_may_train("params.yaml", cell)  # the repository's own pipeline trains as usual
    with pytest.raises(StageError, match="a grid's cells are trained by its workers"):
        check_may_train("grids/smoke/params.yaml", cell)
    monkeypatch.setenv("DSS_WORKER", "1/2")
    check_may_train("grids/smoke/params.yaml", cell)
    monkeypatch.setenv("DSS_ASSEMBLE", "1")
    with pytest.raises(StageError, match="an assembly trains nothing"):
        check_may_train("params.yaml", cell)


def _trained(output: str) -> list[str]:
    return re.findall(r"Running stage '[^']*train_score@([^']+)'", output)


KILL_PROFILE = {
    "data": {"datasets": ["anli1"]},
    "split": {"valid_size": 10, "pool_size": 90, "test_size": 40},
    "grid": {"datasets": ["anli1"], "methods": ["finetune"], "students": ["tiny-t5"], "fractions": [0.5, 1.0],
             "seeds": [0]},
    "train": {"lr": 1.0e-2, "lr_new_params": None, "warmup_steps": 0, "batch_size": 8, "max_steps": 160,
              "eval_every": 40, "max_input_tokens": 64, "max_target_tokens": 32, "freeze_embeddings": False,
              "dropout": None},
    "run": {"valid_batch_size": 32, "save_every": 20, "keep_weights": False},
}


@pytest.mark.slow
def test_two_workers_one_killed_mid_cell_then_a_third_clone_assembles_every_cell_trained_once(tmp_path):
    repo = copy_project(tmp_path)
    (repo / "profiles" / "killtest.yaml").write_text(yaml.safe_dump(KILL_PROFILE))
    run([sys.executable, "-m", "distill_step_by_step.grid", "init", "killtest"], repo)
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "killtest grid"], repo)
    remote = tmp_path / "remote"

    def worker(i: int) -> subprocess.Popen:
        return subprocess.Popen([str(repo / "launch" / "worker.sh"), "killtest", str(remote), f"{i}/2", "--create-remote"],
                                env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    second, first = worker(2), worker(1)
    clone1 = repo / ".workers" / "killtest-1"
    state = clone1 / ".resume" / "models" / "killtest" / "anli1" / "finetune" / "tiny-t5" / "f0.5-s0" / "checkpoint"
    deadline = time.time() + 600
    while not (state / "trainer_state.json").is_file():  # mid-cell, with a state saved
        assert first.poll() is None and time.time() < deadline, first.stdout.read() if first.poll() is not None else "timeout"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the whole job: worker, dvc and the training process
    first.wait()
    saved_step = json.loads((state / "trainer_state.json").read_text())["step"]
    assert 0 < saved_step < 160
    again = worker(1)  # started again on the same disk
    out_again, out_second = again.communicate(timeout=900)[0], second.communicate(timeout=900)[0]
    assert again.returncode == 0 and second.returncode == 0, (out_again[-3000:], out_second[-3000:])

    trained = {**finished_events(clone1)}
    for cell, n in finished_events(repo / ".workers" / "killtest-2").items():
        trained[cell] = trained.get(cell, 0) + n
    assert trained == {"anli1/finetune/tiny-t5/f0.5-s0": 1, "anli1/finetune/tiny-t5/f1.0-s0": 1}
    resumed = [json.loads(line) for line in (clone1 / "logs" / "models" / "killtest" / "anli1" / "finetune" /
                                             "tiny-t5" / "f0.5-s0" / "runs.jsonl").read_text().splitlines()]
    assert [e["event"] for e in resumed].count("started") == 2  # killed once, started again
    assert next(e for e in resumed if e["event"] == "trained")["resumed_at_step"] == saved_step

    third = copy_project(tmp_path / "third")  # any machine: a clone that reaches the remote
    (third / "profiles" / "killtest.yaml").write_text(yaml.safe_dump(KILL_PROFILE))
    run([sys.executable, "-m", "distill_step_by_step.grid", "init", "killtest"], third)
    assembled = run([sys.executable, "-m", "distill_step_by_step.grid", "assemble", "killtest", "--remote", str(remote)],
                    third).stdout
    assert finished_events(third) == {} and "grid killtest: 2 of 2 cells finished" in assembled
    report = (third / "reports" / "killtest" / "results.md").read_text()
    assert "no results yet" not in report and "standard fine-tuning" in report
    again = run([sys.executable, "-m", "distill_step_by_step.grid", "assemble", "killtest", "--remote", str(remote)],
                third).stdout
    assert finished_events(third) == {} and "grid killtest: 2 of 2 cells finished" in again


@pytest.mark.slow
def test_a_budgeted_worker_starts_no_cell_it_cannot_finish_and_leaves_only_whole_cells(tmp_path):
    repo = copy_project(tmp_path)
    grid = [sys.executable, "-m", "distill_step_by_step.grid"]
    before = run([*grid, "status", "smoke", "--guess-minutes", "0.25"], repo).stdout
    assert "grid smoke: 0 of 12 cells finished, 12 missing (estimated 0.05 h of one worker)" in before
    budget = 45
    start = time.monotonic()
    out = run([*grid, "work", "smoke", "--budget", f"{budget}s", "--guess-minutes", "0.25"], repo,
              env=worker_env()).stdout
    elapsed = time.monotonic() - start
    done = int(re.search(r"worker 1/1: (\d+) cells done", out).group(1))
    assert elapsed < budget and 0 < done < 12 and "not starting" in out, out[-2000:]
    after = run([*grid, "status", "smoke"], repo).stdout
    assert f"grid smoke: {done} of 12 cells finished, {12 - done} missing" in after
    finished = Grid("smoke", repo).finished()
    for cell in Grid("smoke", repo).cells():  # whole cells: results for a finished one, nothing for the others
        outputs = (repo / cell.results_dir("results/smoke") / "metrics.json").is_file()
        assert outputs == (cell in finished), cell.name
    assert not list((repo / ".resume").glob("models/**/checkpoint"))  # no half-trained cell left behind
    times = json.loads((repo / "grids" / "smoke" / "cell_times.json").read_text())
    assert len(times) == done and all(0 < t["seconds"] < budget for t in times.values())
    # the CPU time of each cell's processes: one torch thread each, so not above its wall time by much
    assert all(0 < t["cpu_seconds"] < 1.5 * t["seconds"] for t in times.values()), times
    cpu = sum(t["cpu_seconds"] for t in times.values()) / 3600
    assert f"  CPU time: {done} of {done} finished cells measured it, {cpu:.2f} h in all; the {12 - done} missing " \
           "cells with a similar measured cell need about" in after


def _readme_block(marker: str) -> str:
    """The shell block of the README that follows ``<!-- test: marker -->``."""
    text = (REPO / "README.md").read_text()
    return re.search(rf"<!-- test: {marker} -->\s*```bash\n(.*?)```", text, re.S).group(1)


@pytest.mark.slow
def test_the_readme_scale_out_commands_on_a_fresh_clone_restore_the_committed_grid_and_train_nothing(tmp_path):
    """The README's block as a user copies it: the committed smoke grid's cells come from the repository's
    store, so its two workers and the assembly train none, the status says all 12 are done, and there is
    nothing new to commit."""
    repo = copy_project(tmp_path, committed_grids=True)
    remote = tmp_path / "shared-remote"
    remote.mkdir()
    script = _readme_block("scale-out").replace("/path/to/shared/remote", str(remote))
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=repo, env=worker_env(PATH=f"{VENV / 'bin'}:{os.environ['PATH']}"),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "grid smoke: 12 of 12 cells finished, 0 missing" in proc.stdout and _trained(proc.stdout) == []
    for worker in ("1/2", "2/2"):
        assert f"worker {worker}: 0 cells done (0 trained here), 0 not started (budget), 0 failed" in proc.stdout, \
            proc.stdout[-3000:]
    assert run(["git", "status", "--porcelain"], repo).stdout == "" and run(["git", "log", "--format=%s"], repo).stdout == "init\n"


@pytest.mark.slow
def test_the_readme_refactor_block_shows_a_cell_unchanged_and_records_the_new_code(tmp_path):
    """A refactor (here a comment in the training loop) on a fresh clone: the README's block retrains one
    kept smoke cell to the same bytes, and the lock then records the new code for all of them."""
    repo = copy_project(tmp_path, committed_grids=True)
    with (repo / "src" / "distill_step_by_step" / "train" / "training.py").open("a") as fh:
        fh.write("# a refactor that changes no number\n")
    run([*GIT, "commit", "-qam", "a refactor"], repo)
    before = run([*GRID, "status", "smoke"], repo).stdout
    assert "12 finished cells were made by code or data that changed since" in before, before
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_block("refactor")], cwd=repo,
                          env=worker_env(PATH=f"{VENV / 'bin'}:{os.environ['PATH']}"), capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "grids/smoke/dvc.lock: 17 stages record this checkout's code" in proc.stdout, proc.stdout[-3000:]
    assert "store/" not in proc.stdout and "left as it is" not in proc.stdout  # no new object: the same bytes
    after = run([*GRID, "status", "smoke"], repo).stdout
    assert "grid smoke: 12 of 12 cells finished" in after and "changed since" not in after, after
    assert run(["git", "status", "--porcelain", "store", "results", "reports"], repo).stdout == ""


@pytest.mark.slow
def test_the_readme_queue_example_runs_as_written_on_a_fresh_clone(tmp_path):
    repo = copy_project(tmp_path)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_block("queue")], cwd=repo,
                          env=worker_env(PATH=f"{VENV / 'bin'}:{os.environ['PATH']}"), capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = run(["dvc", "queue", "status"], repo).stdout
    assert status.count("Success") == 2 and "Failed" not in status, status

    # DVC's views of the two experiments, as the README shows them (a wide terminal: nothing is squeezed)
    views = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_block("views")], cwd=repo,
                           env=worker_env(PATH=f"{VENV / 'bin'}:{os.environ['PATH']}", COLUMNS="400"),
                           capture_output=True, text=True, timeout=600)
    assert views.returncode == 0, views.stdout[-3000:] + views.stderr[-3000:]
    table = views.stdout[:views.stdout.index("Path")]  # `dvc exp show`, before the diffs
    assert max(len(line) for line in table.splitlines()) <= 160, table
    header = next(line for line in table.splitlines() if "Experiment" in line).split()
    assert header == ["Experiment", "demo.esnli.ft.minilm-l6-d1.f50", "demo.esnli.sbs.minilm-l6-d1.f50",
                      "demo.esnli.sbs-ft.minilm-l6-d1.f50", "params.yaml:train.lr"], table
    assert "[lr-1e-4]" in table and "[lr-3e-4]" in table
    params = re.search(r"params\.yaml\s+train\.lr\s+(\S+)\s+(\S+)", views.stdout)
    assert params and (float(params[1]), float(params[2])) == (1e-4, 3e-4), views.stdout
    assert re.search(r"reports/summary\.json\s+demo\.esnli\.sbs-ft\.minilm-l6-d1\.f50\s+-?\d", views.stdout), views.stdout
    assert (repo / "dvc_plots" / "index.html").is_file() and run(["git", "status", "--porcelain"], repo).stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_a_fresh_clone_rebuilds_a_committed_grid_report_without_training(tmp_path, profile):
    """Also a grid with no cell yet (gpu: the teacher-only report), whose results folder a clone lacks."""
    repo = copy_project(tmp_path, committed_grids=True)
    kept = sum(name.startswith("train_score@") for name in Grid(profile, repo).locked())
    assert kept > 0 if profile != "gpu" else kept == 0 and not (repo / "results" / profile).exists()
    committed = {p.relative_to(repo): p.read_bytes() for p in (repo / "reports" / profile).rglob("*") if p.is_file()}
    assert (repo / "reports" / profile / "results.md") .relative_to(repo) in committed
    for name in ("results.md", "results.csv", "comparisons.csv"):
        (repo / "reports" / profile / name).unlink()
    out = run([sys.executable, "-m", "distill_step_by_step.grid", "report", profile], repo).stdout
    assert _trained(out) == [] and finished_events(repo) == {} and f"Running stage 'grids/{profile}/dvc.yaml:report'" in out
    rebuilt = {p.relative_to(repo): p.read_bytes() for p in (repo / "reports" / profile).rglob("*") if p.is_file()}
    assert rebuilt == committed
    status = run([sys.executable, "-m", "distill_step_by_step.grid", "status", profile], repo).stdout
    total = len(Grid(profile, repo).cells())
    assert f"grid {profile}: {kept} of {total} cells finished, {total - kept} missing" in status
    # a clone without the grid's data says so, and does not call its cells changed
    assert "changed since" not in status and ((f"{kept} finished cells' training data is not in this clone" in status)
                                              == (kept > 0)), status


@pytest.mark.slow
def test_the_gpu_lease_kit_runs_a_budgeted_lease_on_a_copy_without_git_and_brings_the_cells_back(tmp_path):
    """The kit end to end on the CPU: prepare here, run the lease's command in a plain copy of the tree (what
    the lent machine gets: no .git), then collect what it packed into a fresh clone."""
    from distill_step_by_step.ops.kit import join_parts, split_file

    repo = copy_project(tmp_path)
    run([sys.executable, "-m", "distill_step_by_step.kit", "prepare", "smoke", "--no-download"], repo)
    device = tmp_path / "device"
    files = run(["git", "ls-files", "-co", "--exclude-standard"], repo).stdout.split()
    for rel in [*files, *(str(p.relative_to(repo)) for p in (repo / ".kit" / "remote").rglob("*") if p.is_file())]:
        (device / rel).parent.mkdir(parents=True, exist_ok=True)
        (device / rel).write_bytes((repo / rel).read_bytes()) if not (repo / rel).is_symlink() else \
            (device / rel).symlink_to(os.readlink(repo / rel))
    os.chmod(device / "launch" / "lease.sh", 0o755)
    out = tmp_path / "out"
    proc = subprocess.run([str(device / "launch" / "lease.sh"), "smoke", "90s", "2", "--guess-minutes", "0.25"],
                          cwd=device, env=worker_env(OUT=str(out), DSS_KIT_STAGE=str(tmp_path / "stage"),
                                              PATH=f"{VENV / 'bin'}:{os.environ['PATH']}"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    back = sorted(p.name for p in out.iterdir())
    assert "logs.tar.gz" in back and any(n.startswith("cells-") for n in back) and len(back) <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    collected = run([sys.executable, "-m", "distill_step_by_step.kit", "collect", "smoke", str(out)], repo).stdout
    finished = int(re.search(r"grid smoke: (\d+) of 12 cells finished", collected).group(1))
    # the lease's run logs came back with its cells: each cell trained once there, and none here
    lease_runs = finished_events(repo)
    assert finished > 0 and len(lease_runs) == finished and set(lease_runs.values()) == {1}
    # a file too large for one command travels in parts and is joined, checked by its size, on the far side
    big = tmp_path / "model.whl"
    big.write_bytes(os.urandom(300_000))
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "model.whl.size").write_text(str(big.stat().st_size))
    parts = split_file(big, tmp_path / "parts", 100_000)
    assert len(parts) == 3 and join_parts([tmp_path / "parts"], tmp_path / "joined") == [tmp_path / "joined" / "model.whl"]
    assert (tmp_path / "joined" / "model.whl").read_bytes() == big.read_bytes()
    parts[1].unlink()  # a set with a part still to come is not joined
    assert join_parts([tmp_path / "parts"], tmp_path / "joined2") == []


@pytest.mark.slow
def test_a_fresh_clone_that_runs_the_committed_smoke_grid_again_changes_no_committed_file(tmp_path):
    """Reproduction you can see: every cell of the committed smoke grid trained again from scratch, and its
    report built again, leave `git status` empty (no clock, no machine, no floating-point noise in a file)."""
    repo = copy_project(tmp_path, committed_grids=True)
    cells = [c.stage for c in Grid("smoke", repo).cells()]
    run(["dvc", "repro", "grids/smoke/dvc.yaml:baseline"], repo)  # the data stages (DVC-cached, not kept)
    out = run(["dvc", "repro", "-f", "-s", *[f"grids/smoke/dvc.yaml:{s}" for s in [*cells, "report"]]], repo,
              env=worker_env(DSS_WORKER="1/1")).stdout
    assert len(_trained(out)) == 12
    status = run(["git", "status", "--porcelain"], repo).stdout
    assert status == "", status
    # the README's way to see it, as written
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_block("reproduce")], cwd=repo,
                          env=worker_env(PATH=f"{VENV / 'bin'}:{os.environ['PATH']}"), capture_output=True, text=True)
    assert proc.returncode == 0 and "nothing to commit, working tree clean" in proc.stdout, proc.stdout + proc.stderr
    assert json.loads(run(["dvc", "metrics", "diff", "--json"], repo).stdout) == {}
