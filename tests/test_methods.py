"""How each method turns real corpus records into training pairs."""

import pytest

from distill_step_by_step.data.corpus import read_corpus
from distill_step_by_step.methods.registry import (
    EXPLAIN_PREFIX, PREDICT_PREFIX, label_from_output, rationale_from_output, single_task_target, training_examples,
)
from distill_step_by_step.settings import MethodConfig


@pytest.fixture(scope="module")
def svamp(corpus):
    return read_corpus(corpus / "svamp", "train")


def test_finetune_uses_gold_and_every_row(svamp):
    ex, stats = training_examples(svamp, MethodConfig.from_params("finetune", {}), None)
    assert stats.used == stats.examples == len(svamp) == len(ex)
    assert [e.label_target for e in ex] == [r["label"] for r in svamp]
    assert ex[0].label_source == svamp[0]["input"] and ex[0].rationale_target is None


def test_distill_uses_teacher_labels_and_counts_unparsed(svamp):
    ex, stats = training_examples(svamp, MethodConfig.from_params("distill", {}), None)
    unparsed = sum(not r["teacher_ok"] for r in svamp)
    assert unparsed > 0 and stats.dropped == {"teacher label unparsed": unparsed}
    assert stats.used == len(ex) == len(svamp) - unparsed
    ok = [r for r in svamp if r["teacher_ok"]]
    assert [e.label_target for e in ex] == [r["teacher_label"] for r in ok]


@pytest.mark.parametrize("labels", ["gold", "teacher"])
def test_step_by_step_pairs(svamp, labels):
    method = MethodConfig.from_params("step_by_step", {"alpha": 0.3, "labels": labels})
    ex, stats = training_examples(svamp, method, None)
    assert method.alpha == 0.3
    assert all(e.label_source.startswith(PREDICT_PREFIX) for e in ex)
    with_rat = [e for e in ex if e.rationale_target is not None]
    assert all(e.rationale_source.startswith(EXPLAIN_PREFIX) for e in with_rat)
    assert len(with_rat) == stats.with_rationale == sum(r["teacher_ok"] for r in svamp)
    if labels == "gold":
        assert stats.used == len(svamp)  # an unparsed rationale drops only the explain task


def test_nli_pairs_use_the_students_separator(corpus):
    rec = read_corpus(corpus / "anli1", "train")[0]
    ex, _ = training_examples([rec], MethodConfig.from_params("step_by_step", {}), "[SEP]")
    assert ex[0].label_source == f"{PREDICT_PREFIX}{rec['premise']}[SEP]{rec['hypothesis']}"


def test_single_task_round_trip(svamp):
    method = MethodConfig.from_params("single_task", {})
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
        MethodConfig.from_params("cot", {})
    with pytest.raises(ValueError, match=r"methods.step_by_step.alpha: must be <= 1, got 1.5"):
        MethodConfig.from_params("step_by_step", {"alpha": 1.5})
    with pytest.raises(ValueError, match="methods.step_by_step.labels: must be one of gold, teacher"):
        MethodConfig.from_params("step_by_step", {"labels": "silver"})
    with pytest.raises(ValueError, match="methods.step_by_step.alhpa: unknown setting"):
        MethodConfig.from_params("step_by_step", {"alhpa": 0.3})
