"""GPU benchmark: the figures of ``bench/results/gpu.json`` (SmolLM2-135M student; one GPU).

``make bench-gpu`` (= ``.venv/bin/python bench/bench_gpu.py``) on a machine with a GPU measures:

1. **Training step** of the SmolLM2-135M student at batch 32 (256 input / 128 target tokens, bf16
   autocast), ``step_by_step`` and ``finetune``: the real ``training.train_student`` loop, timed by its
   ``on_step`` hook, and the fraction of that time the GPU is busy (NVML utilisation sampled every
   20 ms: the share of each sample period in which a kernel ran).
2. **Test decoding**, label only (ours: ``inference.predict``, bounded by the longest training label)
   against rationale + label (up to 128 new tokens per example, as a single-task student decodes),
   examples/s.
3. **Cells per hour** with 1, 4 and 8 cells at once on the one GPU: each cell is a process that trains
   ``--cell-steps`` steps of ``step_by_step`` and decodes ``--cell-test`` test examples, exactly as a
   queued ``train_score`` stage would (``DSS_GPUS=0 DSS_JOBS_PER_GPU=N``); and each cell's peak
   GPU memory.
4. From ``bench_train_step.py`` and ``bench_cell.py``, run on the same GPU: model FLOPs utilisation of a
   T5-base-size model (bf16, batch 64, 512 / 256 tokens) and the cell ratio against the authors' way.

``--smoke`` runs every part with tiny counts (on a CPU too) to check the script itself; its figures are
not measurements and go to ``bench/results/gpu-smoke.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchlib

STUDENT = "smollm2-135m"


class BusySampler:
    """The GPU's utilisation (NVML) sampled in a thread while a block runs; ``None`` where NVML is missing."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.samples = interval, []
        self._stop, self._thread, self._handle = threading.Event(), None, None

    def __enter__(self) -> "BusySampler":
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0])
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._thread = threading.Thread(target=self._run, args=(pynvml,), daemon=True)
            self._thread.start()
        except Exception:  # no NVML (a CPU, or no driver library): no figure, not an error
            self._handle = None
        return self

    def _run(self, pynvml: Any) -> None:
        while not self._stop.is_set():
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu / 100.0)
            self._stop.wait(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def busy_fraction(self) -> float | None:
        return round(statistics.fmean(self.samples), 3) if self.samples else None


def students() -> dict[str, dict[str, Any]]:
    from distill_step_by_step.settings import read_params

    return read_params(benchlib.ROOT / "params.yaml")["students"]


def train_config(a, steps: int):
    from distill_step_by_step.settings import TrainConfig

    return TrainConfig(lr=5e-5, warmup_steps=0, batch_size=a.batch_size, max_steps=steps, eval_every=steps,
                       max_input_tokens=a.max_input, max_target_tokens=a.max_target, mixed_precision="auto")


def run_config(a):
    """How the cells run: validation and test decoding at ``--eval-batch-size``, no loss logging."""
    from distill_step_by_step.settings import RunConfig

    return RunConfig(valid_batch_size=a.eval_batch_size, test_batch_size=a.eval_batch_size, log_every=10**6)


def step_time(method: str, data: benchlib.BenchData, a, work: Path) -> dict[str, Any]:
    """Seconds per optimizer step over ``a.steps`` steps after ``a.warmup``, and the GPU's busy share then."""
    from distill_step_by_step.methods.registry import method_settings
    from distill_step_by_step.train import training

    ends: list[float] = []
    sampler = BusySampler()

    def on_step(event: training.StepEvent) -> None:  # measuring only
        if event.step == a.warmup:
            benchlib.sync()
            sampler.__enter__()
        if event.step >= a.warmup:
            benchlib.sync()
            ends.append(time.perf_counter())
        if event.step == a.warmup + a.steps:
            sampler.__exit__()

    with benchlib.PeakRSS() as mem:
        training.train_student(students()[STUDENT], method_settings(method, {}),
                               training.CellData(data.train, data.valid[:1], data.answer_type),
                               train_config(a, a.warmup + a.steps), 0, work / method / "model", work / method / "state",
                               {"cell": f"bench/{method}"}, training.TrainHooks(on_step=on_step), run=run_config(a))
    seconds = (ends[-1] - ends[0]) / (len(ends) - 1)
    print(f"  {method}: {seconds:.4f} s/step at batch {a.batch_size}, GPU busy {sampler.busy_fraction}; "
          f"{benchlib.fmt_mem(mem.figures())}", flush=True)
    return {"seconds_per_step": round(seconds, 4), "gpu_busy_fraction": sampler.busy_fraction, **mem.figures()}


def decode_rates(data: benchlib.BenchData, a) -> dict[str, Any]:
    """Label-only test decoding (ours) vs rationale + label (``a.max_target`` new tokens), examples/s."""
    import torch

    from distill_step_by_step.methods.registry import method_settings
    from distill_step_by_step.students.modeling import generate
    from distill_step_by_step.students.student import build_student
    from distill_step_by_step.train.inference import predict

    student = build_student(students()[STUDENT])
    if torch.cuda.is_available():
        student.model.to("cuda")
    method = method_settings("step_by_step", {})
    bound = max(len(student.tokenizer(" " + r["label"], add_special_tokens=False)["input_ids"]) + 1 for r in data.train)
    info = {"max_label_tokens": bound, "max_input_tokens": a.max_input}  # as a checkpoint's inference info says
    out = {}
    for name, run in (("label_only", lambda: predict(student, info, method, data.test, batch_size=a.eval_batch_size)),
                      ("rationale_and_label", lambda: _forced(student, data, a, generate))):
        run()  # warm-up (kernels, allocator)
        benchlib.sync()
        t0 = time.perf_counter()
        run()
        benchlib.sync()
        out[name] = round(len(data.test) / (time.perf_counter() - t0), 1)
    out["ratio"] = round(out["label_only"] / out["rationale_and_label"], 2)
    print(f"  decoding {len(data.test)} test examples: label only {out['label_only']} ex/s, rationale + label "
          f"{out['rationale_and_label']} ex/s ({out['ratio']}x)", flush=True)
    return out


def _forced(student, data: benchlib.BenchData, a, generate) -> list[str]:
    gen = student.model.generation_config
    gen.min_new_tokens = a.max_target  # an untrained model stops anywhere: decode what a rationale would need
    try:
        return generate(student, [r["input"] for r in data.test], max_new_tokens=a.max_target,
                        batch_size=a.eval_batch_size, max_source=a.max_input)
    finally:
        gen.min_new_tokens = None


CELL_WORKER = """
import json, sys, time
sys.path.insert(0, {src!r})
from distill_step_by_step.ops.gpu import claim_gpu
claim_gpu(poll_seconds=0.2)
import torch
from distill_step_by_step.jsonio import read_jsonl
from distill_step_by_step.settings import RunConfig, TrainConfig
from distill_step_by_step.train import training
from distill_step_by_step.train.inference import score_student
args = json.loads(sys.argv[1])
train, test = read_jsonl(args["train"]), read_jsonl(args["test"])
run = RunConfig(**args["run"])
training.train_student(args["student"], method_settings("step_by_step", {{}}),
                       training.CellData(train, test[:1], args["answer_type"]), TrainConfig(**args["cfg"]), 0,
                       args["out"], args["out"] + "-state", run=run)
score_student(args["out"], test, args["answer_type"], batch_size=run.test_batch_size)
peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
print("PEAK_GIB", peak)
"""


def cells_per_hour(data: benchlib.BenchData, a, work: Path) -> dict[str, Any]:
    """Wall time of N concurrent cells on GPU 0 (through GPU slots), as cells per hour, for each N."""
    from dataclasses import asdict

    from distill_step_by_step.jsonio import write_jsonl

    write_jsonl(work / "train.jsonl", data.train)
    write_jsonl(work / "test.jsonl", data.test[:a.cell_test])
    cfg, run = asdict(train_config(a, a.cell_steps)), asdict(run_config(a))
    out: dict[str, Any] = {}
    for n in a.concurrency:
        env = {**os.environ, "DSS_GPUS": "0", "DSS_JOBS_PER_GPU": str(n), "TMPDIR": str(work)}
        env.pop("CUDA_VISIBLE_DEVICES", None)
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", CELL_WORKER.format(src=str(benchlib.ROOT / "src")), json.dumps({
            "student": students()[STUDENT], "train": str(work / "train.jsonl"), "test": str(work / "test.jsonl"),
            "answer_type": data.answer_type, "cfg": cfg, "run": run, "out": str(work / f"cell-{n}-{i}")})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(n)]
        results = [p.communicate() for p in procs]
        wall = time.perf_counter() - t0
        failed = [err[-2000:] for p, (_, err) in zip(procs, results) if p.returncode != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} cells failed:\n{failed[0]}")
        peaks = [float(line.split()[1]) for o, _ in results for line in o.splitlines()
                 if line.startswith("PEAK_GIB") and line.split()[1] != "None"]
        out[str(n)] = {"wall_seconds": round(wall, 1), "cells_per_hour": round(n * 3600 / wall, 1),
                       "peak_gpu_memory_gib_per_cell": round(max(peaks), 2) if peaks else None}
        print(f"  {n} cell(s) at once: {wall:.0f} s, {out[str(n)]['cells_per_hour']} cells/hour, peak GPU memory per "
              f"cell {out[str(n)]['peak_gpu_memory_gib_per_cell']} GiB", flush=True)
    return out


def from_other_benchmarks(a, work: Path) -> dict[str, Any]:
    """MFU (bench_train_step.py) and the cell ratio (bench_cell.py), run on this machine now."""
    figures: dict[str, Any] = {}
    for name, extra in (("train_step", ["--batch-sizes", "64"] + (["--quick"] if a.smoke else [])),
                        ("cell", ["--quick"] if a.smoke else [])):
        path = work / f"{name}.json"
        cmd = [sys.executable, str(benchlib.BENCH / f"bench_{name}.py"), "--json-out", str(path), *extra]
        subprocess.run(cmd, check=True, stdout=sys.stdout, stderr=subprocess.DEVNULL)
        figures[name] = json.loads(path.read_text())
    mfu = figures["train_step"]["figures"].get("mfu") or {}
    cell = figures["cell"]["ratios"].get("cell_end_to_end", {})
    return {"t5_base_bf16_mfu": mfu.get("mfu"), "t5_base_bf16_model_tflops_per_second": mfu.get("model_tflops_per_second"),
            "cell_ratio_vs_reference": cell.get("value")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny counts, any device: checks the script, measures nothing")
    ap.add_argument("--dataset", default="esnli")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=128)
    ap.add_argument("--max-input", type=int, default=256)
    ap.add_argument("--max-target", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--n-test", type=int, default=1000, help="test examples for the decoding rates")
    ap.add_argument("--cell-steps", type=int, default=100)
    ap.add_argument("--cell-test", type=int, default=500)
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--out", default=None, help="default: bench/results/gpu.json (gpu-smoke.json with --smoke)")
    a = ap.parse_args(argv)
    if a.smoke:
        a.batch_size, a.eval_batch_size, a.max_input, a.max_target = 2, 4, 64, 8
        a.steps, a.warmup, a.n_test, a.cell_steps, a.cell_test, a.concurrency = 2, 1, 4, 2, 4, "1,2"
    a.concurrency = [int(n) for n in a.concurrency.split(",")]
    benchlib.quiet_hf()
    import torch

    if not torch.cuda.is_available() and not a.smoke:
        raise SystemExit("bench_gpu.py measures a GPU and there is none here (--smoke checks the script on a CPU)")
    benchlib.header("GPU benchmark: SmolLM2-135M cells (bench/results/gpu.json)")
    data = benchlib.load_data(a.dataset, max(200, a.batch_size * (a.warmup + a.steps + 2)), 1, a.n_test)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        sbs, ft = step_time("step_by_step", data, a, work), step_time("finetune", data, a, work)
        decoding = decode_rates(data, a)
        cells = cells_per_hour(data, a, work)
        figures.update(from_other_benchmarks(a, work))
    info = benchlib.machine_info()
    result = {
        "device": (info.get("gpu") or {}).get("name") or "cpu (smoke run, not a measurement)",
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=benchlib.ROOT, capture_output=True, text=True).stdout.strip(),
        "smollm2_step_by_step_seconds_per_step": sbs["seconds_per_step"],
        "smollm2_finetune_seconds_per_step": ft["seconds_per_step"],
        "gpu_busy_fraction": sbs["gpu_busy_fraction"],
        "gpu_busy_fraction_finetune": ft["gpu_busy_fraction"],
        **figures,
        "label_only_decode_examples_per_second": decoding["label_only"],
        "rationale_and_label_decode_examples_per_second": decoding["rationale_and_label"],
        "cells_per_hour": {n: c["cells_per_hour"] for n, c in cells.items()},
        "peak_gpu_memory_gib": {n: c["peak_gpu_memory_gib_per_cell"] for n, c in cells.items()},
        "settings": {"dataset": a.dataset, "batch_size": a.batch_size, "max_input_tokens": a.max_input,
                     "max_target_tokens": a.max_target, "timed_steps": a.steps, "cell_steps": a.cell_steps,
                     "cell_test_examples": a.cell_test, "precision": "bf16 autocast" if torch.cuda.is_available() else "fp32"},
        "machine": info,
    }
    path = Path(a.out or benchlib.RESULTS / ("gpu-smoke.json" if a.smoke else "gpu.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
