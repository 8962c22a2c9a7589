"""Benchmark 3: test-time inference, label-only decoding (ours, step_by_step) vs generating the rationale
and the label (the single-task way), examples/s.

Both variants decode the same test examples with the same student, batch size and batching (inputs
sorted by length, greedy decoding) in this process; they differ only in what they generate:

* ours: ``predict: x`` -> label;
* single-task way: ``x`` -> ``rationale Answer: label``, then the label read from behind the marker.

The student is not trained here, so where it would stop is not meaningful: each variant is made to decode
exactly what a trained model would, one batch at a time: a batch ends when its longest output ends, so
every batch runs to the length of its longest reference target (label + EOS for ours; rationale, marker,
label and EOS for the single-task way). That comparison gives the ratio. For reference it also runs our
real test-time code path (``inference.predict``, as the train_score stage calls it) decoding every batch
to its bound ``max_label_tokens`` (the longest training label, EOS included): our worst case.
"""

from __future__ import annotations

import argparse
import sys
import time

import benchlib
from benchlib import PeakRSS, Report, fmt_mem


def label_bound(student, records: list[dict], max_target: int) -> int:
    """``max_label_tokens`` as ``train_student`` computes it: the longest training label, EOS included."""
    from distill_step_by_step.methods.registry import method_settings, training_examples
    from distill_step_by_step.students.modeling import encode_rows

    ex, _ = training_examples(records, method_settings("step_by_step", {}), student.pair_separator)
    rows = encode_rows(student, [e.label_source for e in ex], [e.label_target for e in ex], 512, max_target)
    return max(len(r.target) for r in rows)


def run_predict_at_bound(student, test: list[dict], bound: int, a) -> dict:
    """Our real test-time path (``inference.predict``), every batch decoded to the bound."""
    from distill_step_by_step.methods.registry import method_settings
    from distill_step_by_step.train.inference import predict

    gen = student.model.generation_config
    gen.min_new_tokens = bound  # no early stop
    try:
        benchlib.sync()
        t0 = time.perf_counter()
        # what a checkpoint's inference info says (students.inference_info): the bound and the input cut
        rows = predict(student, {"max_label_tokens": bound, "max_input_tokens": a.max_input},
                       method_settings("step_by_step", {}), test, batch_size=a.batch_size)
        benchlib.sync()
        seconds = time.perf_counter() - t0
    finally:
        gen.min_new_tokens = None
    return {"seconds": seconds, "examples": len(rows), "new_tokens_per_example": bound}


def target_lengths(student, texts: list[str], cap: int) -> list[int]:
    """Tokens a trained model emits for each reference output (text + EOS), capped at ``cap``."""
    return [min(len(t) + 1, cap) for t in student.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def decode(student, sources: list[str], lengths: list[int], method, a) -> dict:
    """Greedy batched decoding as ``modeling.generate`` does it (length-sorted inputs, right padding),
    each batch decoding exactly the longest of its ``lengths``; then the labels are read out."""
    import torch

    from distill_step_by_step.methods.registry import label_from_output

    tok, dev, model = student.tokenizer, benchlib.device(), student.model
    benchlib.sync()
    t0 = time.perf_counter()
    enc = tok(sources, truncation=True, max_length=a.max_input, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(sources)), key=lambda i: len(enc[i]))
    outputs = [""] * len(sources)
    decoded = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), a.batch_size):
            idx = order[start:start + a.batch_size]
            n = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), n), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), n), dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, :len(enc[i])] = torch.tensor(enc[i])
                mask[j, :len(enc[i])] = 1
            length = max(lengths[i] for i in idx)
            gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=length,
                                 min_new_tokens=length, do_sample=False, num_beams=1)
            decoded += length * len(idx)
            for j, text in enumerate(tok.batch_decode(gen, skip_special_tokens=True)):
                outputs[idx[j]] = text.strip()
    labels = [label_from_output(method, o) for o in outputs]
    benchlib.sync()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "examples": len(labels), "new_tokens_per_example": decoded / len(labels)}


def bench_dataset(dataset: str, student, a) -> dict:
    from distill_step_by_step.data.datasets import student_text
    from distill_step_by_step.methods.registry import method_settings, predict_source
    from distill_step_by_step.methods.single_task import single_task_target

    data = benchlib.load_data(dataset, 2000, 0, a.n_test)
    sep = student.pair_separator
    sbs, single = method_settings("step_by_step", {}), method_settings("single_task", {})
    bound = label_bound(student, data.train, a.max_target)
    label_src = [predict_source(r, sbs, sep) for r in data.test]
    label_len = target_lengths(student, [r["label"] for r in data.test], bound)
    st_src = [student_text(r, sep) for r in data.test]
    st_len = target_lengths(student, [single_task_target(r.get("rationale") or "", r["label"]) for r in data.test],
                            a.max_target)
    print(f"{dataset}: {len(data.test)} test examples; label-only outputs {sum(label_len) / len(label_len):.1f} tokens on "
          f"average (bound {bound}), single-task outputs {sum(st_len) / len(st_len):.1f}")
    variants = {
        "single_task": lambda: decode(student, st_src, st_len, single, a),
        "ours": lambda: decode(student, label_src, label_len, sbs, a),
        "ours_predict_at_bound": lambda: run_predict_at_bound(student, data.test, bound, a),
    }
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(a.repeats):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            with PeakRSS() as mem:
                fig = variants[name]()
            fig["examples_per_second"] = fig["examples"] / fig["seconds"]
            fig.update(mem.figures())
            runs[name].append(fig)
            print(f"  {name:21s} run {r + 1}: {fig['examples_per_second']:7.1f} examples/s ({fig['seconds']:.2f} s, "
                  f"{fig['new_tokens_per_example']:.1f} new tokens per example); {fmt_mem(fig)}")
            sys.stdout.flush()
    best = {k: max(v, key=lambda f: f["examples_per_second"]) for k, v in runs.items()}
    out = {k: {**best[k], "runs": v} for k, v in runs.items()}
    out["label_bound_tokens"] = bound
    out["speedup"] = best["ours"]["examples_per_second"] / best["single_task"]["examples_per_second"]
    out["speedup_ours_at_bound"] = (best["ours_predict_at_bound"]["examples_per_second"]
                                    / best["single_task"]["examples_per_second"])
    print(f"  {dataset}: label-only {best['ours']['examples_per_second']:.1f} examples/s vs single-task "
          f"{best['single_task']['examples_per_second']:.1f} = {out['speedup']:.2f}x; our real path at its bound "
          f"{best['ours_predict_at_bound']['examples_per_second']:.1f} examples/s = {out['speedup_ours_at_bound']:.2f}x")
    return out


def main(argv: list[str] | None = None) -> Report:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.common_args(ap)
    ap.add_argument("--student", default="minilm-l3", choices=sorted(benchlib.STUDENTS))
    ap.add_argument("--n-test", type=int, default=200, help="test examples (the default grid's 200)")
    ap.add_argument("--batch-size", type=int, default=64, help="params.yaml run.test_batch_size")
    ap.add_argument("--max-input", type=int, default=512)
    ap.add_argument("--max-target", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant (best run reported)")
    ap.add_argument("--datasets", default="esnli,cqa", help="comma-separated (the default grid's two)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n_test, a.repeats, a.datasets = 64, 1, "esnli"
    benchlib.setup_threads(a.threads)
    benchlib.quiet_hf()
    from transformers import set_seed

    from distill_step_by_step.students.student import build_student

    benchlib.header("Benchmark 3: test-time inference, label-only vs rationale + label (single-task)")
    set_seed(0)
    student = build_student(benchlib.STUDENTS[a.student])
    student.model.to(benchlib.device()).eval()
    datasets = [d for d in a.datasets.split(",") if d]
    rep = Report("inference", settings={"datasets": datasets, "student": a.student, "n_test": a.n_test,
                                        "batch_size": a.batch_size, "repeats": a.repeats, "device": benchlib.device()})
    print(f"settings: {a.student}, batch {a.batch_size}, {a.repeats} alternating run(s) per variant (best reported); "
          f"every batch decodes to its longest reference output")
    per = {d: bench_dataset(d, student, a) for d in datasets}
    rep.figures = {"per_dataset": per}
    # All datasets together: examples over seconds, as a test stage over the grid's datasets would see it.
    def total(name: str) -> float:
        return sum(p[name]["examples"] for p in per.values()) / sum(p[name]["seconds"] for p in per.values())

    o, st, ob = total("ours"), total("single_task"), total("ours_predict_at_bound")
    rep.figures.update({"ours_examples_per_second": o, "single_task_examples_per_second": st,
                        "ours_predict_at_bound_examples_per_second": ob})
    print(f"all datasets: ours (label only) {o:.1f} examples/s, single-task (rationale + label) {st:.1f} examples/s; "
          f"our real path at its bound {ob:.1f} examples/s ({ob / st:.2f}x)")
    for d, p in per.items():
        print(f"RATIO inference_{d} ours/single-task speedup = {p['speedup']:.2f}x")
    print(rep.ratio("inference_examples_per_second", o / st, 5.0, label="ours/single-task"))
    rep.write(a.json_out)
    return rep


if __name__ == "__main__":
    main()
