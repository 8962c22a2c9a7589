"""How each method turns real corpus records into training pairs."""

import pytest

from distill_step_by_step.data.corpus import read_corpus
from distill_step_by_step.methods.registry import label_from_output, method_settings, training_examples
from distill_step_by_step.methods.single_task import rationale_from_output, single_task_target
from distill_step_by_step.methods.step_by_step import EXPLAIN_PREFIX, PREDICT_PREFIX


@pytest.fixture(scope="module")
def svamp(corpus):
    return read_corpus(corpus / "svamp", "train")


def test_finetune_uses_gold_and_every_row(svamp):
    ex, stats = training_examples(svamp, method_settings("finetune", {}), None)
    assert stats.used == stats.examples == len(svamp) == len(ex)
    assert [e.label_target for e in ex] == [r["label"] for r in svamp]
    assert ex[0].label_source == svamp[0]["input"] and ex[0].rationale_target is None


def test_distill_uses_teacher_labels_and_counts_unparsed(svamp):
    ex, stats = training_examples(svamp, method_settings("distill", {}), None)
    unparsed = sum(not r["teacher_ok"] for r in svamp)
    assert unparsed > 0 and stats.dropped == {"teacher label unparsed": unparsed}
    assert stats.used == len(ex) == len(svamp) - unparsed
    ok = [r for r in svamp if r["teacher_ok"]]
    assert [e.label_target for e in ex] == [r["teacher_label"] for r in ok]


@pytest.mark.parametrize("labels", ["gold", "teacher"])
def test_step_by_step_pairs(svamp, labels):
    method = method_settings("step_by_step", {"alpha": 0.3, "labels": labels})
    ex, stats = training_examples(svamp, method, None)
    assert method.alpha == 0.3
    assert all(e.label_source.startswith(PREDICT_PREFIX) for e in ex)
    with_rat = [e for e in ex if e.rationale_target is not None]
    assert all(e.rationale_source.startswith(EXPLAIN_PREFIX) for e in with_rat)
    assert len(with_rat) == stats.with_rationale == sum(r["teacher_ok"] for r in svamp)
    if labels == "gold":
        assert stats.used == len(svamp)  # an unparsed rationale drops only the explain task


def test_teacher_correct_keeps_only_rationales_whose_teacher_label_is_right(corpus):
    anli = read_corpus(corpus / "anli1", "train")
    method = method_settings("step_by_step", {"rationales": "teacher_correct"})
    ex, stats = training_examples(anli, method, None, seed=0, answer_type="nli")
    parsed = [r for r in anli if r["teacher_ok"] and r["rationale"]]
    wrong = sum(r["teacher_label"] != r["label"] for r in parsed)  # NLI labels are compared as words
    assert 0 < wrong < len(parsed) and stats.used == len(anli) == len(ex)  # every label task is kept
    assert stats.with_rationale == len(parsed) - wrong
    assert stats.dropped["rationale's teacher label wrong (label task kept)"] == wrong
    kept = {e.rationale_target for e in ex if e.rationale_target is not None}
    assert kept == {r["rationale"] for r in parsed if r["teacher_label"] == r["label"]}


def test_rationale_fraction_draws_a_nested_seeded_share(svamp):
    parsed = [r for r in svamp if r["teacher_ok"] and r["rationale"]]

    def with_rationale(fraction: float, seed: int, records=parsed) -> set[str]:
        method = method_settings("step_by_step", {"rationale_fraction": fraction})
        ex, stats = training_examples(records, method, None, seed=seed, answer_type="equation")
        assert stats.used == len(records)
        chosen = {e.label_source for e in ex if e.rationale_target is not None}
        assert len(chosen) == stats.with_rationale
        return chosen

    quarter, half, everything = with_rationale(0.25, 0), with_rationale(0.5, 0), with_rationale(1.0, 0)
    assert len(quarter) == round(0.25 * len(parsed)) and len(half) == round(0.5 * len(parsed))
    assert quarter < half < everything and len(everything) == len(parsed)
    assert with_rationale(0.5, 1) != half and with_rationale(0.0, 0) == set()
    # an example's draw does not depend on the others: a subset of the records draws among its own
    assert with_rationale(0.5, 0, parsed[::-1]) == half


def test_an_ablation_is_recorded_when_set_and_the_papers_method_as_before():
    assert method_settings("step_by_step", {}).record() == {"name": "step_by_step", "alpha": 0.5, "labels": "gold"}
    set_ = method_settings("step_by_step", {"rationales": "teacher_correct", "rationale_fraction": 0.5}).record()
    assert set_["rationales"] == "teacher_correct" and set_["rationale_fraction"] == 0.5
    with pytest.raises(ValueError, match="methods.step_by_step.rationale_fraction: must be <= 1, got 2"):
        method_settings("step_by_step", {"rationale_fraction": 2})
    with pytest.raises(ValueError, match="methods.step_by_step.rationales: must be one of all, teacher_correct"):
        method_settings("step_by_step", {"rationales": "best"})


def test_nli_pairs_use_the_students_separator(corpus):
    rec = read_corpus(corpus / "anli1", "train")[0]
    ex, _ = training_examples([rec], method_settings("step_by_step", {}), "[SEP]")
    assert ex[0].label_source == f"{PREDICT_PREFIX}{rec['premise']}[SEP]{rec['hypothesis']}"


def test_single_task_round_trip(svamp):
    method = method_settings("single_task", {})
    ex, stats = training_examples(svamp, method, None)
    assert stats.used == sum(r["teacher_ok"] for r in svamp)
    target = single_task_target("He had 3 and got 2 more.", "( 3.0 + 2.0 )")
    assert ex[0].label_target.endswith(svamp[0]["label"])
    assert label_from_output(method, target) == "( 3.0 + 2.0 )"
    # an uncased tokenizer decodes the marker in lower case with spaces
    assert label_from_output(method, "he had 3. answer : ( 3. 0 + 2. 0 )") == "( 3. 0 + 2. 0 )"
    assert label_from_output(method, "no marker here") == ""
    # the label stands behind the LAST marker; the rationale (original case) is all before it
    assert label_from_output(method, "Answer: is not 4. Answer: ( 2 + 2 )") == "( 2 + 2 )"
    assert rationale_from_output("Answer: is not 4. Answer: ( 2 + 2 )") == "Answer: is not 4."
    assert rationale_from_output("He had 3 apples.") == "He had 3 apples."


def test_bad_method_settings():
    with pytest.raises(ValueError, match="methods.cot: unknown method"):
        method_settings("cot", {})
    with pytest.raises(ValueError, match=r"methods.step_by_step.alpha: must be <= 1, got 1.5"):
        method_settings("step_by_step", {"alpha": 1.5})
    with pytest.raises(ValueError, match="methods.step_by_step.labels: must be one of gold, teacher"):
        method_settings("step_by_step", {"labels": "silver"})
    with pytest.raises(ValueError, match="methods.step_by_step.alhpa: unknown setting"):
        method_settings("step_by_step", {"alhpa": 0.3})


SMOOTHED = '''"""Fine-tuning with label smoothing: loss = (1 - beta) * cross-entropy + beta * the mean of -log p over the
output vocabulary (a toy: a method with a tunable of its own and a loss of its own, in one file)."""

from __future__ import annotations

from dataclasses import dataclass

from distill_step_by_step.methods.method import Method, MethodSettings
from distill_step_by_step.methods.registry import register
from distill_step_by_step.schema import setting


@dataclass(frozen=True)
class SmoothedSettings(MethodSettings):
    beta: float = setting(0.1, ge=0, le=1)


class Smoothed(Method):
    name, Settings, tunables, fixed = "smoothed", SmoothedSettings, ("beta",), {"labels": "gold"}

    def loss(self, cfg, logits, targets):
        import torch.nn.functional as F

        logp = F.log_softmax(logits.float(), dim=-1)
        return (1 - cfg.beta) * F.nll_loss(logp, targets) - cfg.beta * logp.mean()


register(Smoothed())
'''

CHECK_SMOOTHED = '''
import sys, torch
import torch.nn.functional as F
from distill_step_by_step.methods.registry import method_settings, task_loss
from distill_step_by_step.schema import SettingsError
logits, targets = torch.randn(6, 11), torch.randint(0, 11, (6,))
ce = F.cross_entropy(logits, targets)
assert torch.equal(task_loss(method_settings("smoothed", {"beta": 0.0}))(logits, targets), ce)
smooth = -F.log_softmax(logits, -1).mean()
assert torch.allclose(task_loss(method_settings("smoothed", {"beta": 0.25}))(logits, targets), 0.75 * ce + 0.25 * smooth)
for raw in ({"beta": 1.5}, {"alpha": 0.3}):
    try:
        method_settings("smoothed", raw)
    except SettingsError as exc:
        print(exc)
'''


@pytest.mark.slow
def test_a_method_with_its_own_tunable_and_loss_is_one_file_and_its_params(project):
    """The issue's toy: a method whose ``beta`` weights a label-smoothing term, added as one file of the package and
    its ``methods.smoothed`` block; it is checked with its key path, trains through the smoke grid with its loss and
    is recorded with its tunable."""
    import csv
    import json
    import os
    import sys

    from conftest import run

    src = project / "src"
    (src / "distill_step_by_step" / "methods" / "smoothed.py").write_text(SMOOTHED)
    env = {**os.environ, "PYTHONPATH": str(src)}  # this project's package, with the new file
    errors = run([sys.executable, "-c", CHECK_SMOOTHED], project, env=env).stdout.splitlines()
    assert errors == ["params.yaml: methods.smoothed.beta: must be <= 1, got 1.5",
                      "params.yaml: methods.smoothed.alpha: unknown setting; smoothed takes beta"]
    out = run([sys.executable, "-m", "distill_step_by_step.profiles", "run", "smoke", "-S", "grid.methods=[finetune,smoothed]",
               "-S", "+methods.smoothed={beta: 0.3}", "-S", "grid.seeds=[0]", "-S", "grid.fractions=[1.0]"],
              project, env=env).stdout
    assert "Running stage 'train_score@anli1-smoothed-tiny-t5-1.0-0'" in out
    cell = "anli1/{}/tiny-t5/f1.0-s0"
    [record] = project.glob(f"results/*/{cell.format('smoothed')}/student.json")
    assert json.loads(record.read_text())["method_config"] == {"name": "smoothed", "alpha": 0.5, "labels": "gold", "beta": 0.3}

    def first_loss(method: str) -> float:
        [tsv] = project.glob(f"logs/**/{cell.format(method)}/**/train/loss.tsv")
        return float(next(csv.DictReader(tsv.open(), delimiter="\t"))["loss"])

    assert first_loss("smoothed") != first_loss("finetune")  # the same start and batches, another loss
    rows = list(csv.DictReader((project / "reports" / "results.csv").open()))
    assert {r["method"] for r in rows} == {"finetune", "smoothed"}


@pytest.mark.slow
def test_variants_train_beside_their_methods_and_are_compared_with_them(project):
    """The README's block: three variants of step-by-step (another alpha; only the rationales whose teacher label
    is right; rationales for half the examples) in the smoke grid's ``grid.variants``. Their cells are the stage
    ``train_variant``, their records name the variant and its settings, the rationale counts are the ones counted
    by hand, and the report sets each variant beside fine-tuning and beside step-by-step."""
    import csv
    import json
    import re
    import subprocess

    from conftest import REPO

    from distill_step_by_step.data.corpus import read_corpus
    from distill_step_by_step.jsonio import read_lines

    block = re.search(r"<!-- test: variants -->\s*```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Running stage 'train_variant@anli1-sbs_a03-tiny-t5-1.0-0'" in proc.stdout
    assert "sbs_a03" in proc.stdout.split("### Method variants")[-1]  # the grep's table
    [results] = {p.parents[3] for p in project.glob("results/*/anli1/*/tiny-t5/f1.0-s0/student.json")}

    def record(method: str) -> dict:
        return json.loads((results / method / "tiny-t5" / "f1.0-s0" / "student.json").read_text())

    assert record("sbs_a03")["method_config"] == {"name": "step_by_step", "alpha": 0.3, "labels": "gold",
                                                  "variant": "sbs_a03"}
    assert record("step_by_step")["method_config"] == {"name": "step_by_step", "alpha": 0.5, "labels": "gold"}
    correct = record("sbs_correct")
    assert correct["method_config"]["rationales"] == "teacher_correct"
    [split] = {p.parent for p in project.glob("data/**/splits/anli1/seed_0/train_1.0.ids")}
    ids = set(read_lines(split / "train_1.0.ids"))
    train = [r for r in read_corpus(split.parents[2] / "corpus" / "anli1", "train") if r["id"] in ids]
    parsed = [r for r in train if r["teacher_ok"] and r["rationale"]]
    right = sum(r["teacher_label"] == r["label"] for r in parsed)
    assert correct["n_with_rationale"] == right < len(parsed) == record("step_by_step")["n_with_rationale"]
    assert correct["dropped"]["rationale's teacher label wrong (label task kept)"] == len(parsed) - right
    half = record("sbs_half")
    drawn, not_drawn = round(0.5 * len(train)), half["dropped"]["rationale not drawn (rationale_fraction; label task kept)"]
    assert half["n_with_rationale"] + not_drawn == len(parsed) and half["n_used"] == len(train)
    assert len(parsed) - (len(train) - drawn) <= half["n_with_rationale"] <= drawn
    rows = list(csv.DictReader((project / "reports" / "comparisons.csv").open()))
    assert {(r["method"], r["against"]) for r in rows if r["method"].startswith("sbs")} == {
        (v, rival) for v in ("sbs_a03", "sbs_correct", "sbs_half") for rival in ("finetune", "step_by_step", "teacher")}
    text = (project / "reports" / "results.md").read_text()
    assert "`sbs_a03`: step_by_step with alpha 0.3, labels gold" in text
