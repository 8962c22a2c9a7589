"""The package's layout holds: no module imports itself back through others, the science (data, methods,
students, teachers, train) imports neither the operations (``ops``) nor the report, and no module is named
like a test. Imports are read with ``ast`` (lazy ones and those under ``TYPE_CHECKING`` included)."""

import ast
from pathlib import Path

from distill_step_by_step.code_closure import PACKAGE, imported, module_file

from conftest import REPO

SRC = REPO / "src"
SCIENCE = ("data", "methods", "students", "teachers", "train")
APART = ("ops", "report")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (the named ones, not the parents a Python import also runs)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        found = imported(ast.parse(path.read_text()), name, path.name == "__init__.py")
        graph[name] = {m for m in found if m in modules and module_file(SRC, m) is not None} - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back():
    assert _cycles(_graph()) == []


def test_the_science_imports_neither_the_operations_nor_the_report():
    def part(name: str) -> str:
        return name.split(".")[1] if name.count(".") else ""

    crossing = sorted(f"{a} -> {b}" for a, imports in _graph().items() for b in imports
                      if part(a) in SCIENCE and part(b) in APART)
    assert crossing == []


def test_no_module_is_named_like_a_test():
    assert [n for n in _modules() if n.rsplit(".", 1)[-1].startswith("test_") or n.endswith("_test")] == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
