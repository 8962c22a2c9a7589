"""Teacher-completion parsers on the real recorded PaLM completions."""

import re

import pytest

from distill_step_by_step.data.corpus import load_recorded
from distill_step_by_step.data.datasets import parse_completion


# The authors' rules, transcribed from their data_utils.py as an independent oracle. Where they fall back
# to a blank label we return None: those completions do not follow the pattern.
def authors_cqa(output):
    rationale_label = output.split("Q:")[0].rstrip()
    try:
        rationale, label = rationale_label.split("So the answer is")
    except ValueError:
        return None
    rationale = rationale.rstrip()
    try:
        label = re.split(r"\(.\)", label)[1].strip()
        label = label if label[-1] != "." else label[:-1]
    except IndexError:
        return None
    return rationale, label


def authors_svamp(output):
    rationale_label = output.split("Q:")[0].rstrip()
    try:
        rationale, label = rationale_label.split("The answer is")
    except ValueError:
        return None
    m = re.search(r"\(.*\)", label)
    return (rationale.rstrip(), m.group(0)) if m else None


def authors_esnli(output):
    rationale = output.split("Answer:")[0].rstrip()
    try:
        label = output.split("Answer: ")[1].split("Premise")[0].rstrip()
    except IndexError:
        return None
    return rationale, label


def authors_anli(output):
    try:
        rationale, label = output.split("Premise:")[0].rstrip().split("So the answer is")
    except ValueError:
        return None
    return rationale.rstrip(), label.lstrip()[:-1]


ORACLES = {"cqa": authors_cqa, "svamp": authors_svamp, "esnli": authors_esnli, "anli1": authors_anli}


@pytest.mark.parametrize("dataset", ["cqa", "svamp", "esnli", "anli1"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_agrees_with_the_authors_on_every_pattern_following_completion(prepared, dataset, split):
    examples, completions = load_recorded(prepared, dataset, split)
    unparsed = 0
    for text in completions:
        ours = parse_completion(dataset, text)
        if not ours.ok:
            unparsed += 1
            assert ours.error and ours.rationale is None and ours.label is None
            continue
        assert ORACLES[dataset](text) == (ours.rationale, ours.label)
        # the run-on into the next few-shot exemplar is cut off
        assert "\nQ:" not in ours.rationale and "\nPremise:" not in ours.rationale
    # the recorded teacher follows its format almost always; the rest is flagged, not dropped
    assert unparsed < 0.02 * len(completions)


def test_known_answer_forms():
    cqa = parse_completion("cqa", "Beavers build dams in woods. So the answer is (c) wooded area.\n\nQ: next")
    assert (cqa.rationale, cqa.label) == ("Beavers build dams in woods.", "wooded area")
    sv = parse_completion("svamp", "10 * 45 = 450. The answer is (10 * 45).\n\nQ: There are")
    assert (sv.rationale, sv.label) == ("10 * 45 = 450.", "(10 * 45)")
    es = parse_completion("esnli", "Packages need not be lunch.\nAnswer: neutral\n\nPremise: x")
    assert (es.rationale, es.label) == ("Packages need not be lunch.", "neutral")
    an = parse_completion("anli1", "Oxford Street is in London. So the answer is contradiction.\n\nPremise: x")
    assert (an.rationale, an.label) == ("Oxford Street is in London.", "contradiction")


@pytest.mark.parametrize("dataset", ["cqa", "svamp", "esnli", "anli1"])
@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n",
        "The answer is unclear.",
        "So the answer is So the answer is (a) x.",
        "So the answer is (a) x.",  # no rationale
        "Answer: maybe\n\nPremise: p",
        "Q: Q: Q:",
        "\x00\x01 garbage \uffff",
        "So the answer is " + "(" * 10000,
        None,
        12,
    ],
)
def test_odd_completions_are_flagged_not_raised(dataset, text):
    parsed = parse_completion(dataset, text)
    assert not parsed.ok
    assert parsed.error


def test_the_equation_reader_finds_what_the_authors_regex_finds_on_any_text():
    import random

    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(rng.choice("()\n\r x+1.") for _ in range(rng.randint(0, 30)))
        parsed = parse_completion("svamp", f"r The answer is {text}")
        want = authors_svamp(f"r The answer is {text}")
        assert (parsed.label if parsed.ok else None) == (want[1] if want else None), repr(text)


def test_the_equation_reader_reads_a_megabyte_of_unclosed_parentheses():
    # the authors' regex backtracks over every '(' (80k characters took 3.9 s; a million would take hours);
    # the reader scans each line once, so this returns at once
    text = "x The answer is " + "(" * 1_000_000 + "\n(1 + 2) and (3"
    assert parse_completion("svamp", text).label == "(1 + 2)"
