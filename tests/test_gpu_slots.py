"""GPU slots: several stage processes share a GPU through real file locks (no GPU needed to test the locking)."""

import os
import subprocess
import sys
import time

import pytest

from distill_step_by_step.ops.gpu import gpu_slots

# A stand-in for a stage process: claim a slot exactly as stages/train.py does, report it, hold it.
HOLDER = """
import sys, time
from distill_step_by_step.ops.gpu import claim_gpu
gpu = claim_gpu(poll_seconds=0.05)
import os
print(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
time.sleep(float(sys.argv[1]))
"""


def _start(hold: float, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(hold)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_slots_fill_every_gpu_before_doubling_up():
    assert gpu_slots({"DSS_GPUS": "0,1", "DSS_JOBS_PER_GPU": "2"}) == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]
    assert gpu_slots({"DSS_GPUS": "3"}) == [("3", 0)]  # one job per GPU unless asked
    assert gpu_slots({}) == []
    with pytest.raises(ValueError, match="DSS_JOBS_PER_GPU must be a whole number >= 1, got '0'"):
        gpu_slots({"DSS_GPUS": "0", "DSS_JOBS_PER_GPU": "0"})


def test_k_jobs_share_each_gpu_and_the_next_waits_for_a_free_slot(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(DSS_GPUS="0,1", DSS_JOBS_PER_GPU="2", TMPDIR=str(tmp_path))  # the locks live in TMPDIR
    holders = [_start(4.0, env) for _ in range(4)]
    first = [p.stdout.readline().split() for p in holders]  # each line arrives once its slot is taken
    assert sorted(gpu for gpu, _ in first) == ["0", "0", "1", "1"] and all(a == b for a, b in first)
    start = time.monotonic()
    late = _start(0.0, env)  # every slot is taken: it waits until a holder exits
    out, err = late.communicate(timeout=60)
    assert late.returncode == 0, err
    assert time.monotonic() - start > 2.0 and out.split()[0] in ("0", "1")
    for p in holders:
        p.wait(timeout=60)
    assert sorted(tmp_path.glob("dss-gpu-*.lock")) == [tmp_path / f"dss-gpu-{g}-slot{s}.lock" for g in "01" for s in (0, 1)]


def test_an_already_chosen_device_is_left_alone(tmp_path):
    env = {**os.environ, "DSS_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "7", "TMPDIR": str(tmp_path)}
    out = _start(0.0, env).communicate(timeout=60)[0].split()
    assert out == ["None", "7"] and not list(tmp_path.glob("dss-gpu-*"))


def test_a_bad_jobs_per_gpu_stops_a_stage_in_one_line(tmp_path):
    env = {**os.environ, "DSS_GPUS": "0", "DSS_JOBS_PER_GPU": "two", "TMPDIR": str(tmp_path)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, "-c", HOLDER, "0"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: DSS_JOBS_PER_GPU must be a whole number >= 1, got 'two'"
