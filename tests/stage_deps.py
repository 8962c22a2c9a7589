"""Each stage's package-module deps in ``dvc.yaml`` (and the grids' copies) written from its script's import
closure (``code_closure``): ``python tests/stage_deps.py`` after adding an import. The methods' files are a
cell's deps only, its own method's alone (``methods/${item.method}.py``)."""

from __future__ import annotations

from pathlib import Path

from distill_step_by_step.code_closure import METHODS, closure, method_files


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
        needed = stage_modules(name, root / script, src, root)
        found = re.search(r"((?:\n\s+- src/distill_step_by_step/[^\n]+\.py)+)", block)
        indent = re.match(r"\n(\s+)- ", found.group(1)).group(1)
        out += block[:found.start(1)] + "".join(f"\n{indent}- {d}" for d in needed) + block[found.end(1):]
    dvc_yaml.write_text(out)


def stage_modules(stage: str, script: Path, src: Path, root: Path) -> list[str]:
    """The package files a stage depends on, relative to ``root``: its script's import closure, without the
    methods' files, of which a training cell has its own (``methods/${item.method}.py``)."""
    methods = set(method_files(src).values())
    rel = [p.resolve().relative_to(root.resolve()).as_posix() for p in closure(script, src) - methods]
    if stage == "train_score":
        folder = src.resolve().joinpath(*METHODS.split(".")).relative_to(root.resolve()).as_posix()
        rel.append(f"{folder}/${{item.method}}.py")
    return sorted(rel)


if __name__ == "__main__":
    from distill_step_by_step.ops.grid import GRIDS_DIR, init

    here = Path(__file__).resolve().parents[1]
    write_deps(here / "dvc.yaml", here / "src")
    for folder in sorted((here / GRIDS_DIR).iterdir()):  # the grids' copies of the pipeline
        init(folder.name, here)
