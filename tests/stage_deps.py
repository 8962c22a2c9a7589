"""Each stage's package deps in ``dvc.yaml`` (and the grids' copies) written from its script's import closure
(``code_closure``) and the package files those modules read (their ``PACKAGE_DATA``, such as the report's
template): ``python tests/stage_deps.py`` after adding an import or such a file. The methods' files are a
cell's deps only, its own method's alone: the templated line ``methods/${item.method}.py``, kept as written."""

from __future__ import annotations

import ast
from pathlib import Path

from distill_step_by_step.code_closure import closure, method_files

DATA_NAME = "PACKAGE_DATA"


def package_data(modules: set[Path]) -> set[Path]:
    """The non-Python package files these modules read: each module's top-level ``PACKAGE_DATA``, a tuple of
    paths relative to its folder. Read here, not in ``code_closure`` (which the training code imports, so
    that editing it would make every cell stale)."""
    out: set[Path] = set()
    for path in modules:
        for node in ast.parse(path.read_text()).body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            if any(isinstance(t, ast.Name) and t.id == DATA_NAME for t in targets):
                out |= {path.parent / name for name in ast.literal_eval(node.value)}
    return out


def stage_files(script: Path, src: Path) -> set[Path]:
    """Every package file a stage script runs or reads: its import closure and those modules' package data,
    but the methods' files (a cell names its own: ``methods/${item.method}.py``)."""
    modules = closure(script, src)
    return (modules | package_data(modules)) - set(method_files(src).values())


def write_deps(dvc_yaml: Path, src: Path) -> None:
    """Rewrite the package deps of every stage of ``dvc_yaml`` to its script's files (``stage_files``: the lists
    tests/test_stage_deps.py checks): ``python tests/stage_deps.py`` after adding an import."""
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
        needed = sorted(p.resolve().relative_to(root.resolve()).as_posix() for p in stage_files(root / script, src))
        # whole lines naming a package file; a templated one (a dataset's prompt, a cell's method) is left as it is
        found = re.search(r"((?:\n\s+- src/distill_step_by_step/[^\n$]+(?=\n))+)", block)
        indent = re.match(r"\n(\s+)- ", found.group(1)).group(1)
        out += block[:found.start(1)] + "".join(f"\n{indent}- {d}" for d in needed) + block[found.end(1):]
    dvc_yaml.write_text(out)


if __name__ == "__main__":
    from distill_step_by_step.ops.grid import GRIDS_DIR, init

    here = Path(__file__).resolve().parents[1]
    write_deps(here / "dvc.yaml", here / "src")
    for folder in sorted((here / GRIDS_DIR).iterdir()):  # the grids' copies of the pipeline
        init(folder.name, here)
