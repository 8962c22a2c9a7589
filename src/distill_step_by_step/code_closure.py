"""Which package files a piece of code runs: the transitive closure of its imports, read with ``ast``
(function-level imports too: code that may execute a module depends on it).

This decides what counts as a change: a stage's DVC deps are its script's closure (``dvc.yaml``), and a
cell's resumable state is kept only while the closure of the training code is unchanged. Presentation
(``report/``) and operations (``ops/``) are outside the training code's closure, so editing them
invalidates no cell and no half-trained state.

A method is one file of ``methods/``, a student kind one of ``students/kinds/``, and each registry imports its
files when first read: the closure counts every one. A cell runs its own method's file alone, so it depends on
that file (``methods/${item.method}.py`` in ``dvc.yaml``) and on no other method's: adding a method changes no
stage.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "distill_step_by_step"
METHODS = f"{PACKAGE}.methods"
NOT_METHODS = ("__init__", "method", "registry")  # methods/ files that hold no method (registry.py skips them too)
# registry module -> (the package whose every module it imports when first read, the modules it skips)
DISCOVERING = {f"{METHODS}.registry": (METHODS, NOT_METHODS),
               f"{PACKAGE}.students.kind": (f"{PACKAGE}.students.kinds", ("__init__",))}


def module_file(src: Path, dotted: str) -> Path | None:
    """``distill_step_by_step.teachers.http`` -> its file under ``src`` (a module or a package's __init__)."""
    base = src.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported(tree: ast.AST, dotted_self: str, is_package: bool) -> set[str]:
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


def discovered_files(src: Path, package: str, skip: tuple[str, ...]) -> dict[str, Path]:
    """The files of a package whose registry imports each of them, by module name."""
    folder = src.joinpath(*package.split("."))
    return {p.stem: p for p in sorted(folder.glob("*.py")) if p.stem not in skip}


def method_files(src: Path) -> dict[str, Path]:
    """Each method's file (``methods/<name>.py``) by method name."""
    return discovered_files(src, METHODS, NOT_METHODS)


def closure(script: Path, src: Path, dotted: str = "__main__") -> set[Path]:
    """Every package file that running ``script`` (a stage script, or the package module ``dotted``) may
    import, parent packages included."""
    todo = [(script, dotted, dotted != "__main__" and script.name == "__init__.py")]
    seen: set[Path] = set()
    while todo:
        path, dotted, is_package = todo.pop()
        names = imported(ast.parse(path.read_text()), dotted, is_package)
        if dotted in DISCOVERING:  # a registry that imports every file of its package when first read
            package, skip = DISCOVERING[dotted]
            names |= {f"{package}.{name}" for name in discovered_files(src, package, skip)}
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ too
                f = module_file(src, ".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append((f, ".".join(parts[:i]), f.name == "__init__.py"))
    return seen


SRC = Path(__file__).resolve().parents[1]
TRAINING = "distill_step_by_step.train.train_score"  # the code a cell's training runs


def code_fingerprint(module: str = TRAINING, src: Path = SRC, method: str | None = None) -> str:
    """A fingerprint of the package files ``module`` runs (itself and its import closure, of the methods'
    files ``method``'s alone): resumable work saved by code that differs there is not reused; other edits (the
    report, the grid tools, another method) keep it."""
    start = module_file(src, module)
    if start is None:
        raise ValueError(f"no module {module} under {src}")
    methods = method_files(src)
    own = {methods[method]} if method in methods else set()
    files = sorted({start, *closure(start, src, module)} - set(methods.values()) | own)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
