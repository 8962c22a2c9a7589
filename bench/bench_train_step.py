"""Benchmark 2: training-step throughput of step_by_step, ours vs the authors' way (``reference.py``).

Both variants train the same student on the same examples with the same batch size, in this process,
and are timed from the end of warm-up step ``--warmup`` to the end of the last step (everything in
the loop: batching, padding, both tasks' forward and backward passes, clipping, optimizer, logging).
Ours is the real ``training.train_student`` loop: its public ``on_step`` hook records a timestamp per
optimizer step and counts the step's tokens (measuring only; behaviour unchanged). The
reference is ``TaskPrefixTrainer.train()`` without evaluation, timed by a callback at every step end.

Tokens are counted two ways for both: *real* tokens (source and target tokens of both tasks, no
padding) and *padded* tokens (each task's sub-batch padded to its longest source and target, as the
reference's collator pads them; ours may pad the two tasks' sources together, which differs by the
one-token difference between the ``predict:``/``explain:`` prefixes).

On a GPU it also measures model FLOPs utilisation (MFU) of our training step for a T5-base-size model
in bf16 (random weights): model FLOPs per step (forward + backward = 3x forward, matmuls and attention,
counted on real tokens) divided by step time and the GPU's peak dense bf16 throughput.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import PeakRSS, Report, fmt_mem

# Peak dense (no sparsity) bf16 tensor throughput, TFLOP/s, by GPU name fragment (first match wins).
PEAK_BF16_TFLOPS = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4), ("B200", 2250.0),
                    ("A100", 312.0), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
                    ("RTX 4090", 165.2), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0)]


class TokenCounter:
    """Real and padded tokens of every step, in step order, from each sub-batch's (source, target)
    lengths."""

    def __init__(self):
        self.real: list[int] = []
        self.padded: list[int] = []
        self.lengths: list[list[list[tuple[int, int]]]] = []  # step -> sub-batch -> (source, target) per example

    def add(self, batches: list[list[tuple[int, int]]]) -> None:
        self.real.append(sum(s + t for b in batches for s, t in b))
        self.padded.append(sum(len(b) * (max(s for s, _ in b) + max(t for _, t in b)) for b in batches if b))
        self.lengths.append(batches)


def tensor_lengths(batch: dict) -> list[tuple[int, int]]:
    """(source, target) lengths of a padded batch on the CPU."""
    src = batch["attention_mask"].sum(dim=1).tolist()
    tgt = (batch["labels"] != -100).sum(dim=1).tolist()
    return list(zip(src, tgt))


def t5_flops_per_step(batches: list[list[tuple[int, int]]], cfg) -> float:
    """Model FLOPs of one training step (3x forward) of a T5-style encoder-decoder on these sub-batches,
    counted on real (unpadded) tokens: 2 FLOPs per multiply-accumulate of every matmul, including the
    attention scores and weighted sums and the LM head."""
    d, ff, h, dk, v = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv, cfg.vocab_size
    inner = h * dk
    gated = 2 if getattr(cfg, "is_gated_act", False) else 1
    ffn = 2 * d * ff * gated + 2 * ff * d  # wi (x2 when gated) and wo
    proj = 2 * d * inner  # one of q, k, v, o for one token
    total = 0.0
    for b in batches:
        for s, t in b:
            enc = s * cfg.num_layers * (4 * proj + ffn + 2 * 2 * s * inner)
            # self-attention (q, k, v, o and scores over t), cross-attention (q, o on the target; k, v on
            # the s encoder outputs; scores over s), feed-forward
            dec = cfg.num_decoder_layers * (t * (4 * proj + 2 * 2 * t * inner) + t * 2 * proj + s * 2 * proj
                                            + t * 2 * 2 * s * inner + t * ffn)
            total += enc + dec + t * 2 * d * v
    return 3.0 * total


def run_ours(student_cfg: dict, data: benchlib.BenchData, a, work: Path, precision: str) -> dict:
    from distill_step_by_step.settings import RunConfig, TrainConfig
    from distill_step_by_step.methods.registry import method_settings
    from distill_step_by_step.train import training

    ends: list[float] = []
    counter = TokenCounter()

    def on_step(event) -> None:  # measuring only: the device's end of each step, and its token counts
        benchlib.sync()
        ends.append(time.perf_counter())
        # the (source, target) lengths of each task sub-batch: no tensor work inside the timed loop
        counter.add([[(len(r.source), len(r.target)) for r in rows] for units in event.micro_batches for rows, _ in units])

    cfg = TrainConfig(lr=5e-5, warmup_steps=0, weight_decay=0.0, batch_size=a.batch_size, grad_accum=1,
                      max_steps=a.warmup + a.steps, grad_clip=1.0, eval_every=a.warmup + a.steps,
                      max_input_tokens=a.max_input, max_target_tokens=a.max_target, mixed_precision=precision)
    shutil.rmtree(work / "ours", ignore_errors=True)
    training.train_student(student_cfg, method_settings("step_by_step", {"alpha": 0.5}),
                           training.CellData(data.train, data.valid[:1], data.answer_type), cfg, 0, work / "ours" / "model",
                           work / "ours" / "state", {"cell": "bench/ours"}, training.TrainHooks(on_step=on_step),
                           run=RunConfig(valid_batch_size=64, log_every=10))
    flops = [t5_flops_per_step(b, a.model_config) for b in counter.lengths] if a.count_flops else []
    return _figures(ends, counter, a, flops)


def run_reference(student_cfg: dict, data: benchlib.BenchData, a, work: Path, bf16: bool) -> dict:
    import reference
    from transformers import set_seed

    from distill_step_by_step.students.student import build_student

    counter = TokenCounter()

    class CountingCollator(reference.TaskPrefixDataCollator):
        def __call__(self, features, return_tensors=None):
            out = super().__call__(features, return_tensors)
            counter.add([tensor_lengths(out["pred"]), tensor_lengths(out["expl"])])
            return out

    set_seed(0)
    student = build_student(student_cfg)
    if benchlib.device() == "cuda":
        student.model.to("cuda")
    rows = reference.tokenize(student, data.train, a.max_input, 256)
    clock = reference.StepClock()
    shutil.rmtree(work / "reference", ignore_errors=True)
    trainer = reference.build_trainer(student, rows, None, work / "reference", max_steps=a.warmup + a.steps, eval_steps=None,
                                      batch_size=a.batch_size, lr=5e-5, seed=0, bf16=bf16, callbacks=[clock],
                                      collator=CountingCollator(tokenizer=student.tokenizer, model=student.model))
    trainer.train()
    return _figures(clock.ends, counter, a, [])


def _figures(ends: list[float], counter: TokenCounter, a, flops: list[float]) -> dict:
    w, n = a.warmup, a.steps
    if len(ends) < w + n or len(counter.real) < w + n:
        raise RuntimeError(f"expected {w + n} steps, saw {len(ends)} step ends and {len(counter.real)} batches")
    seconds = ends[w + n - 1] - ends[w - 1] if w > 0 else ends[n - 1] - ends[0]
    steps = n if w > 0 else n - 1
    first = w if w > 0 else 1
    real = sum(counter.real[first:first + steps])
    padded = sum(counter.padded[first:first + steps])
    out = {"steps_timed": steps, "seconds": seconds, "seconds_per_step": seconds / steps,
           "examples_per_second": steps * a.batch_size / seconds, "real_tokens_per_second": real / seconds,
           "padded_tokens_per_second": padded / seconds, "padding_fraction": 1 - real / padded if padded else 0.0}
    if flops:
        out["model_tflops_per_second"] = sum(flops[first:first + steps]) / seconds / 1e12
    return out


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for frag, tf in PEAK_BF16_TFLOPS:
        if frag.lower() in name.lower():
            return tf
    return None


def compare(student_cfg: dict, data: benchlib.BenchData, a, work: Path, precision: str, cuda: bool) -> dict:
    """Alternating runs of both variants at ``a.batch_size``; the best run of each."""
    runs: dict[str, list[dict]] = {"reference": [], "ours": []}
    for r in range(a.repeats):
        for name in (["reference", "ours"] if r % 2 == 0 else ["ours", "reference"]):
            with PeakRSS() as mem:
                fig = (run_ours(student_cfg, data, a, work, precision) if name == "ours"
                       else run_reference(student_cfg, data, a, work, cuda))
            fig.update(mem.figures())
            runs[name].append(fig)
            print(f"  {name:9s} run {r + 1}: {fig['seconds_per_step']:.3f} s/step, {fig['examples_per_second']:.1f} "
                  f"examples/s, {fig['real_tokens_per_second']:.0f} real tokens/s, "
                  f"{fig['padded_tokens_per_second']:.0f} padded tokens/s ({100 * fig['padding_fraction']:.0f}% padding); "
                  f"{fmt_mem(fig)}")
            sys.stdout.flush()
    # The best (fastest) run of each variant: the least disturbed by other work on a shared machine.
    best = {k: min(v, key=lambda f: f["seconds_per_step"]) for k, v in runs.items()}
    out = {k: {**best[k], "runs": v} for k, v in runs.items()}
    o, ref = best["ours"], best["reference"]
    out["examples_ratio"] = o["examples_per_second"] / ref["examples_per_second"]
    out["real_tokens_ratio"] = o["real_tokens_per_second"] / ref["real_tokens_per_second"]
    print(f"  batch {a.batch_size}: ours {o['examples_per_second']:.1f} examples/s, {o['real_tokens_per_second']:.0f} real "
          f"tokens/s; reference {ref['examples_per_second']:.1f} examples/s, {ref['real_tokens_per_second']:.0f} real "
          f"tokens/s: {out['examples_ratio']:.2f}x examples/s, {out['real_tokens_ratio']:.2f}x real tokens/s")
    return out


def measure_mfu(a, work: Path, cuda: bool) -> dict:
    """Our training step on a T5-base-size model (random weights), bf16 on a GPU: model FLOP/s and MFU."""
    from transformers import AutoConfig, AutoTokenizer

    from distill_step_by_step.students.student import resolve_ref

    conf = dict(benchlib.STUDENTS[a.mfu_student]["config"])
    mt = conf.pop("model_type")
    conf.setdefault("vocab_size", len(AutoTokenizer.from_pretrained(resolve_ref(benchlib.MINILM))))
    a.model_config = AutoConfig.for_model(mt, **conf)
    a.count_flops = True
    a.batch_size, a.steps, a.warmup = a.mfu_batch_size, a.mfu_steps, max(2, a.warmup)
    data = benchlib.load_data(a.dataset, max(a.n_train, a.mfu_batch_size * (a.mfu_steps + 4)), 1, 0)
    with PeakRSS() as mem:
        fig = run_ours(benchlib.STUDENTS[a.mfu_student], data, a, work, "bf16" if cuda else "no")
    fig.update(mem.figures())
    a.count_flops = False
    gpu = benchlib.machine_info().get("gpu") or {}
    peak = peak_tflops(gpu.get("name", ""), a.peak_tflops)
    fig["peak_tflops"] = peak
    fig["mfu"] = fig["model_tflops_per_second"] / peak if peak else None
    mfu = f"{100 * fig['mfu']:.1f}%" if fig["mfu"] is not None else "n/a (unknown peak; pass --peak-tflops)"
    print(f"MFU ({a.mfu_student}, {'bf16' if cuda else 'fp32 on CPU'}, batch {a.mfu_batch_size}, {a.dataset}, "
          f"{a.mfu_steps} timed steps): {fig['model_tflops_per_second']:.2f} model TFLOP/s of {peak} peak = {mfu}; "
          f"{fig['examples_per_second']:.1f} examples/s; {fmt_mem(fig)}")
    return {"student": a.mfu_student, "batch_size": a.mfu_batch_size, **fig}


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.common_args(ap)
    ap.add_argument("--student", default="minilm-l3", choices=sorted(benchlib.STUDENTS))
    ap.add_argument("--batch-sizes", default="8,16",
                    help="comma-separated; the last one gives the RATIO line (8: the default grid's)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each run")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant (best run reported)")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--max-input", type=int, default=512)
    ap.add_argument("--max-target", type=int, default=256)
    ap.add_argument("--mfu-student", default="t5-base-size", choices=sorted(benchlib.STUDENTS))
    ap.add_argument("--mfu-batch-size", type=int, default=64, help="the authors' batch size")
    ap.add_argument("--mfu-steps", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the accelerator's peak dense bf16 TFLOP/s")
    ap.add_argument("--mfu-on-cpu", action="store_true", help="compute the MFU figures on CPU too (checks the code)")
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.warmup, a.repeats, a.batch_sizes, a.mfu_steps = 4, 1, 1, "8", 6
    batch_sizes = [int(b) for b in a.batch_sizes.split(",") if b]
    benchlib.setup_threads(a.threads)
    benchlib.quiet_hf()
    a.count_flops, a.model_config = False, None
    cuda = benchlib.device() == "cuda"
    precision = "bf16" if cuda else "no"

    benchlib.header("Benchmark 2: training-step throughput, step_by_step (both tasks per step)")
    data = benchlib.load_data(a.dataset, a.n_train, 1, 0)
    rep = Report("train_step", settings={
        "dataset": a.dataset, "student": a.student, "batch_sizes": batch_sizes, "timed_steps": a.steps,
        "warmup_steps": a.warmup, "repeats": a.repeats, "precision": precision, "device": benchlib.device(),
        "max_input_tokens": a.max_input, "max_target_tokens": a.max_target})
    print(f"settings: {a.dataset} ({len(data.train)} training examples), {a.student}, batch {' and '.join(map(str, batch_sizes))} "
          f"(each example: label task + rationale task), {a.steps} timed steps after {a.warmup} warm-up steps, "
          f"{a.repeats} alternating run(s) per variant (best reported), {'bf16' if cuda else 'fp32'}")
    student_cfg = benchlib.STUDENTS[a.student]
    per_batch: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        work = Path(tmp)
        for b in batch_sizes:
            a.batch_size = b
            per_batch[str(b)] = compare(student_cfg, data, a, work, precision, cuda)
        rep.figures["per_batch_size"] = per_batch
        if cuda or a.mfu_on_cpu:
            rep.figures["mfu"] = measure_mfu(a, work, cuda)
        else:
            rep.figures["mfu"] = None
            print("MFU: n/a (no GPU)")
    for b, f in per_batch.items():
        print(f"RATIO train_step_batch{b} ours/reference: {f['examples_ratio']:.2f}x examples/s, "
              f"{f['real_tokens_ratio']:.2f}x real tokens/s")
    last = per_batch[str(batch_sizes[-1])]
    rep.figures["tokens_ratio_real"] = round(last["real_tokens_ratio"], 3)
    print(rep.ratio("train_step_examples_per_second", last["examples_ratio"], 1.2,
                    label=f"(batch {batch_sizes[-1]}) ours/reference"))
    rep.write(a.json_out)
    return rep


if __name__ == "__main__":
    main()
