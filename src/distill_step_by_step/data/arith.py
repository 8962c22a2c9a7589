"""A safe evaluator for SVAMP equations: numbers, + - * /, unary minus and parentheses.

Model output is untrusted text: nothing here calls ``eval``. Anything outside the grammar, too long,
too deep, dividing by zero or overflowing yields ``None`` (scored as wrong), never an exception.
"""

from __future__ import annotations

import math
import re

MAX_CHARS = 512
MAX_DEPTH = 64
_TOKEN = re.compile(r"[ \t]*(?:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)|([-+*/()]))")


class _Syntax(Exception):
    pass


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise _Syntax(f"unexpected character {text[pos]!r}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ; unary := '-' unary | atom."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise _Syntax("unexpected end")
        self.i += 1
        return tok

    def expr(self, depth: int) -> float:
        if depth > MAX_DEPTH:
            raise _Syntax("nested too deeply")
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self, depth: int) -> float:
        value = self.unary(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.unary(depth)
            if op == "*":
                value = value * rhs
            else:
                if rhs == 0:
                    raise _Syntax("division by zero")
                value = value / rhs
        return value

    def unary(self, depth: int) -> float:
        if self.peek() in ("-", "+"):
            sign = -1.0 if self.take() == "-" else 1.0
            if depth > MAX_DEPTH:
                raise _Syntax("nested too deeply")
            return sign * self.unary(depth + 1)
        return self.atom(depth)

    def atom(self, depth: int) -> float:
        tok = self.take()
        if tok == "(":
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise _Syntax("missing ')'")
            return value
        if tok[0].isdigit() or tok[0] == ".":
            return float(tok)
        raise _Syntax(f"unexpected {tok!r}")


def value_of(text: str | None) -> float | None:
    """The value of an arithmetic expression, or None if it is not one (or is not finite)."""
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        return None
    try:
        tokens = _tokenize(text)
        if not tokens:
            return None
        parser = _Parser(tokens)
        value = parser.expr(0)
        if parser.peek() is not None:
            return None
    except (_Syntax, OverflowError, ValueError, RecursionError):
        return None
    return value if math.isfinite(value) else None
