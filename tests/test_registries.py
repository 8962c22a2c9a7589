"""A method and a dataset are each one registration: a toy of each (the method a file of the package's
``methods/``, the dataset defined outside the package), through a grid."""

import csv
import os
import sys
import textwrap

import pytest

from distill_step_by_step.data.datasets import DatasetSpec, get_spec
from distill_step_by_step.methods.registry import Method, get_method, registry

from conftest import run

TOY_PLUGIN = '''
from pathlib import Path

from distill_step_by_step.data import datasets
from distill_step_by_step.report import presentation

anli = datasets.get_spec("anli1")
# a dataset: ANLI-R1's files under another name, with its own prompt file
datasets.register(datasets.DatasetSpec(
    "anli-toy", "nli", anli.splits, anli.normalise, anli.model_input, anli.fields, anli.parse,
    anli.stop, 1 / 3, prompt=Path(__file__).parent / "anli-toy.txt"))
presentation.register_dataset_title("anli-toy", "ANLI-R1 (toy)")
presentation.register_look("toy", presentation.MethodLook("toy: labels, twice from step 3", "toy", "tab:red", "v"))
'''

TOY_METHOD = '''"""A method with phases: the label task, its weight doubled from step 3 on (it sees the step)."""

from .method import Method
from .registry import register


class LabelsCountTwiceLater(Method):
    name = "toy"

    def units(self, cfg, step, batch, label_rows, rationale_rows, grad_accum=1):
        return [([label_rows[i] for i in batch], (2.0 if step >= 3 else 1.0) / grad_accum)]


register(LabelsCountTwiceLater())
'''


def test_a_dataset_spec_missing_a_piece_fails_when_it_is_made():
    anli = get_spec("anli1")
    args = ("broken", "nli", anli.splits, anli.normalise, anli.model_input, anli.fields, anli.parse)
    with pytest.raises(ValueError, match="dataset 'broken': no few-shot prompt at"):
        DatasetSpec(*args, anli.stop, 1 / 3)
    with pytest.raises(ValueError, match="dataset 'broken': needs the stop strings"):
        DatasetSpec(*args, (), 1 / 3, prompt=anli.prompt_file())
    with pytest.raises(ValueError, match="answer_type must be one of choice, nli, equation"):
        DatasetSpec("broken", "prose", *args[2:], anli.stop, None, prompt=anli.prompt_file())


def test_each_method_is_one_registered_object():
    assert list(registry()) == ["distill", "finetune", "single_task", "step_by_step"]  # one file each, by name
    assert get_method("step_by_step").tunables == ("alpha", "labels", "rationales", "rationale_fraction")
    assert get_method("distill").fixed == {"labels": "teacher"}
    assert isinstance(get_method("finetune"), Method)
    with pytest.raises(ValueError, match="unknown method 'cot'; known: distill, finetune, single_task, step_by_step"):
        get_method("cot")


@pytest.mark.slow
def test_a_toy_method_and_a_toy_dataset_each_registered_in_one_place_run_through_a_grid(project, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "toy_plugin.py").write_text(textwrap.dedent(TOY_PLUGIN))
    (plugins / "anli-toy.txt").write_text(get_spec("anli1").prompt_file().read_text())
    # the annotate stage depends on the dataset's prompt file, in the package's prompts/ folder
    (project / "src" / "distill_step_by_step" / "prompts" / "anli-toy.txt").write_text(get_spec("anli1").prompt_file().read_text())
    (project / "src" / "distill_step_by_step" / "methods" / "toy.py").write_text(TOY_METHOD)
    env = {**os.environ, "DSS_PLUGINS": "toy_plugin", "PYTHONPATH": os.pathsep.join([str(plugins), str(project / "src")])}
    out = run([sys.executable, "-m", "distill_step_by_step.profiles", "run", "smoke", "-S", "data.datasets=[anli-toy]",
               "-S", "grid.datasets=[anli-toy]", "-S", "grid.methods=[finetune,toy]", "-S", "+methods.toy={}",
               "-S", "grid.seeds=[0]", "-S", "grid.fractions=[1.0]"], project, env=env).stdout
    assert "Running stage 'train_score@anli-toy-toy-tiny-t5-1.0-0'" in out
    rows = list(csv.DictReader((project / "reports" / "results.csv").open()))
    assert {(r["dataset"], r["method"]) for r in rows} == {("anli-toy", "finetune"), ("anli-toy", "toy")}
    report = (project / "reports" / "results.md").read_text()
    assert "## ANLI-R1 (toy)" in report and "toy: labels, twice from step 3" in report
