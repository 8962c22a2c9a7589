"""Which package modules a stage script runs: the transitive closure of its imports, read with ``ast``.

Function-level (lazy) imports count too: a stage that may execute a module depends on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "distill_step_by_step"


def _module_file(src: Path, dotted: str) -> Path | None:
    """``distill_step_by_step.teachers.http`` -> its file under ``src`` (a module or a package's __init__)."""
    base = src.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported(tree: ast.AST, dotted_self: str, is_package: bool) -> set[str]:
    """Dotted names of the package modules a module imports (absolute and relative, at any depth)."""
    out: set[str] = set()
    here = dotted_self.split(".") if is_package else dotted_self.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != PACKAGE:
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from . import x` may name a submodule
    return out


def closure(script: Path, src: Path) -> set[Path]:
    """Every package file that running ``script`` may import (parent packages included)."""
    todo = [(script, "__main__", False)]
    seen: set[Path] = set()
    while todo:
        path, dotted, is_package = todo.pop()
        for name in _imported(ast.parse(path.read_text()), dotted, is_package):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ too
                f = _module_file(src, ".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append((f, ".".join(parts[:i]), f.name == "__init__.py"))
    return seen


def write_deps(dvc_yaml: Path, src: Path) -> None:
    """Rewrite the package-module deps of every stage of ``dvc_yaml`` to its script's import closure (the
    lists tests/test_stage_deps.py checks): ``python tests/stage_deps.py`` after adding an import."""
    import re

    import yaml

    root = dvc_yaml.parent
    text = dvc_yaml.read_text()
    stages = yaml.safe_load(text)["stages"]
    starts = [text.index(f"\n  {name}:\n") for name in stages] + [len(text)]
    out = text[:starts[0]]
    for (name, stage), start, end in zip(stages.items(), starts, starts[1:]):
        block, body = text[start:end], stage.get("do", stage)
        script = next(w for w in body["cmd"].split() if w.startswith("stages/") and w.endswith(".py"))
        needed = sorted(p.resolve().relative_to(root.resolve()).as_posix() for p in closure(root / script, src))
        found = re.search(r"((?:\n\s+- src/distill_step_by_step/[^\n$]+\.py)+)", block)
        indent = re.match(r"\n(\s+)- ", found.group(1)).group(1)
        out += block[:found.start(1)] + "".join(f"\n{indent}- {d}" for d in needed) + block[found.end(1):]
    dvc_yaml.write_text(out)


if __name__ == "__main__":
    from distill_step_by_step.ops.grid import GRIDS_DIR, init

    here = Path(__file__).resolve().parents[1]
    write_deps(here / "dvc.yaml", here / "src")
    for folder in sorted((here / GRIDS_DIR).iterdir()):  # the grids' copies of the pipeline
        init(folder.name, here)
