"""The safe SVAMP evaluator: right values on real equations, None on anything hostile or odd."""

import pytest

from distill_step_by_step.data.arith import value_of
from distill_step_by_step.data.scoring import is_correct, is_exact
from distill_step_by_step.jsonio import read_jsonl


def test_values_follow_precedence_and_parentheses():
    assert value_of("( 84.0 / 2.0 )") == 42.0
    assert value_of("( 10.0 - ( 6.0 + 3.0 ) )") == 1.0
    assert value_of("2 + 3 * 4") == 14.0
    assert value_of("(2 + 3) * 4") == 20.0
    assert value_of("-3 + 5") == 2.0
    assert value_of("8 / 4 / 2") == 1.0
    assert value_of(".5 * 4") == 2.0
    assert is_correct("equation", "(84 / 2)", "( 84.0 / 2.0 )") and is_exact("equation", "(84 / 2)", "( 84.0 / 2.0 )")
    assert is_correct("equation", "(0.1 + 0.2)", "0.3") and not is_exact("equation", "(0.1 + 0.2)", "0.3")
    assert not is_correct("equation", "(84 - 2)", "( 84.0 / 2.0 )")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('echo pwned')",
        "open('/etc/passwd').read()",
        "lambda: 1",
        "2 ** 1000",
        "9 ** 9 ** 9",
        "1e309",
        "1 / 0",
        "(1 - 1) / (2 - 2)",
        "9" * 400,
        "(" * 5000 + "1" + ")" * 5000,
        "-" * 5000 + "1",
        "((1 + 2)",
        "(1 + 2))",
        "1 2",
        "()",
        "",
        "   ",
        "x + 1",
        "١٢ + 1",
        "1; 2",
        "[1, 2]",
        "0x10",
        "1_000",
        "(84 / 2).",
        None,
        42,
    ],
)
def test_hostile_or_malformed_input_is_none(text):
    assert value_of(text) is None


def test_every_gold_svamp_equation_evaluates(prepared):
    for split in ("train", "test"):
        for row in read_jsonl(prepared / "svamp" / f"{split}.jsonl"):
            assert value_of(row["label"]) is not None, row


def test_no_eval_or_exec_anywhere_in_the_project():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"(?<![\w.])(eval|exec)\s*\(")
    offenders = [
        str(p) for d in ("src", "stages", "bench") for p in (root / d).rglob("*.py")
        if pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
