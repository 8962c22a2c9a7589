"""Every stage depends on the package modules its script imports, so a code change re-runs what it affects
(and only that: a title or a colour reruns no cell); resumable states follow the training code alone; and
dvc.yaml spells a cell's paths as ``cell.Cell`` does."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from distill_step_by_step.code_closure import closure, code_fingerprint, method_files
from distill_step_by_step.train.cell import Cell

from conftest import REPO, copy_project, run
from stage_deps import package_data, stage_files

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
VARIANT_METHODS = "src/distill_step_by_step/methods"


def _script(cmd: str) -> Path:
    return REPO / next(word for word in cmd.split() if word.startswith("stages/") and word.endswith(".py"))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_depends_on_every_module_its_script_imports(name):
    stage = STAGES[name]
    body = stage.get("do", stage)
    deps = {d for d in body["deps"] if d.startswith("src/")}
    script = _script(body["cmd"])
    needed = {p.relative_to(REPO).as_posix() for p in stage_files(script, REPO / "src")}
    own_method = "src/distill_step_by_step/methods/${item.method}.py"  # a cell's own method's file, no other stage's
    assert (own_method in deps) == (name == "train_score")
    assert (VARIANT_METHODS in deps) == (name == "train_variant")  # a variant's cell: every method's file
    assert script.relative_to(REPO).as_posix() in body["deps"]
    assert not needed - deps, f"{name}: missing deps {sorted(needed - deps)}"
    # and nothing it neither imports nor reads, which would re-run it for nothing (a dataset's prompt file,
    # `${item}`, is that item's data)
    assert not {d for d in deps if "${" not in d and d != VARIANT_METHODS} - needed, f"{name}: needless deps"


def test_a_variants_cells_are_a_methods_cells_but_for_their_list_and_method_files():
    methods, variants = STAGES["train_score"], STAGES["train_variant"]
    assert methods["matrix"] == {**variants["matrix"], "method": "${grid.methods}"}
    assert variants["matrix"]["method"] == "${grid.variants}"
    own = "src/distill_step_by_step/methods/${item.method}.py"
    assert [d if d != own else VARIANT_METHODS for d in methods["deps"]] == variants["deps"]
    assert {k: v for k, v in methods.items() if k not in ("matrix", "deps")} == \
        {k: v for k, v in variants.items() if k not in ("matrix", "deps")}


def test_only_the_report_stage_depends_on_the_report_template():
    template = "src/distill_step_by_step/report/templates/results.md.j2"
    assert [name for name, stage in STAGES.items() if template in stage.get("do", stage)["deps"]] == ["report"]
    assert (REPO / template).is_file()


def test_package_data_is_read_from_the_modules_that_declare_it(tmp_path):
    (tmp_path / "a.py").write_text('PACKAGE_DATA = ("templates/x.j2", "y.txt")\n')
    (tmp_path / "b.py").write_text('PACKAGE_DATA: tuple[str, ...] = ("z.txt",)\nOTHER = ("w.txt",)\n')
    (tmp_path / "c.py").write_text('def f():\n    PACKAGE_DATA = ("no.txt",)\n')  # not at the top level
    found = package_data({tmp_path / n for n in ("a.py", "b.py", "c.py")})
    assert {p.relative_to(tmp_path).as_posix() for p in found} == {"templates/x.j2", "y.txt", "z.txt"}


def test_the_import_closure_follows_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "distill_step_by_step"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .. import leaf\n")
    (pkg / "leaf.py").write_text("import json\n")
    (pkg / "lazy.py").write_text("def f():\n    from .sub import x\n")
    script = tmp_path / "stage.py"
    script.write_text("from distill_step_by_step.lazy import f\n")
    names = {p.relative_to(tmp_path).as_posix() for p in closure(script, tmp_path)}
    assert names == {"distill_step_by_step/__init__.py", "distill_step_by_step/lazy.py",
                     "distill_step_by_step/sub/__init__.py", "distill_step_by_step/leaf.py"}


def test_dvc_yaml_names_cell_paths_as_cell_does():
    from distill_step_by_step.train.cell import CURVE_FILE, METRICS_FILE, PREDICTIONS_FILE, RECORD_FILE

    cell = Cell("esnli", "finetune", "minilm-l6", 0.25, 1)
    item = {"item.dataset": "esnli", "item.method": "finetune", "item.student": "minilm-l6", "item.fraction": "0.25",
            "item.seed": "1", "paths.results": "results/demo", "paths.models": "models"}

    def render(text: str) -> str:
        for key, value in item.items():
            text = text.replace("${" + key + "}", value)
        return text

    stage = STAGES["train_score"]
    outs = [render(next(iter(o)) if isinstance(o, dict) else o) for o in stage["outs"]]
    assert outs == [cell.model_dir().as_posix(), *((cell.results_dir() / name).as_posix()
                                                   for name in (RECORD_FILE, PREDICTIONS_FILE, METRICS_FILE, CURVE_FILE))]
    assert "metrics" not in stage and "plots" not in stage  # outputs: the report's summary.json is DVC's metric
    # the stage's name as DVC's matrix spells it
    names = [k for k in STAGES]
    assert "train_score" in names and cell.stage == "train_score@esnli-finetune-minilm-l6-0.25-1"


def _code_changed(repo: Path, *pipelines: str) -> list[str]:
    """The stages of these pipelines that `dvc status` finds with a package file changed among their deps."""
    out = json.loads(run(["dvc", "status", "--json", *pipelines], repo).stdout or "{}")
    return sorted({name for name, what in out.items() for w in what if isinstance(w, dict)
                   for path, state in w.get("changed deps", {}).items()
                   if "src/distill_step_by_step/" in path and state == "modified"})


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.slow
def test_cosmetic_edits_make_only_the_reports_stale_and_a_loss_edit_every_cell(tmp_path):
    """Titles, colours, plot styles and the report's template are the report's: the committed cells stay
    current. A new method's file changes no stage; a method's own code makes its cells stale, the default loss
    every cell."""
    repo = copy_project(tmp_path, committed_grids=True)
    pipelines = ("dvc.yaml", "grids/smoke/dvc.yaml")
    assert _code_changed(repo, *pipelines) == []  # the locks record this code
    src = repo / "src" / "distill_step_by_step"
    _edit(src / "report" / "presentation.py", '"standard fine-tuning", "ft", "tab:blue"',
          '"fine-tuning on gold labels", "ft", "tab:cyan"')
    _edit(src / "report" / "presentation.py", '"esnli": "e-SNLI"', '"esnli": "e-SNLI (Camburu et al., 2018)"')
    _edit(src / "report" / "plots.py", 'linestyle=":", linewidth=1.2', 'linestyle=":", linewidth=2.0')
    assert _code_changed(repo, *pipelines) == ["grids/smoke/dvc.yaml:report", "report"]
    run(["git", "checkout", "-q", "--", "src"], repo)
    _edit(src / "report" / "templates" / "results.md.j2", "## The paper's findings", "## What the paper found")
    assert _code_changed(repo, *pipelines) == ["grids/smoke/dvc.yaml:report", "report"]

    run(["git", "checkout", "-q", "--", "src"], repo)
    (src / "methods" / "new_method.py").write_text('"""A method no grid names yet."""\n')
    assert _code_changed(repo, *pipelines) == []  # adding a method changes no stage
    _edit(src / "methods" / "step_by_step.py", "(1.0 - cfg.alpha) / grad_accum", "(1.0 - cfg.alpha) / grad_accum * 1.0")
    stale = _code_changed(repo, *pipelines)
    assert stale and all("-step_by_step-" in s for s in stale)  # that method's cells alone
    assert len(stale) == 4 + 4  # the demo's and the smoke grid's step-by-step cells
    _edit(src / "methods" / "method.py", "return F.cross_entropy(logits.float(), targets)",
          "return F.cross_entropy(logits.float(), targets, label_smoothing=0.0)")
    stale = _code_changed(repo, *pipelines)
    cells = [s for s in stale if "train_score@" in s]
    # the default loss: every cell of the demo and the smoke grid (and, as settings.py reads the methods' registry,
    # the other stages' code too: `grid commit` records those, as their outputs do not change)
    assert len(cells) == 8 + 12

    # had that edit changed no number, `grid commit` records the new code in the lock, outputs untouched
    lock = repo / "grids" / "smoke" / "dvc.lock"
    outs = {k: v["outs"] for k, v in yaml.safe_load(lock.read_text())["stages"].items()}
    run([sys.executable, "-m", "distill_step_by_step.grid", "commit", "smoke"], repo)
    assert _code_changed(repo, "grids/smoke/dvc.yaml") == []
    assert {k: v["outs"] for k, v in yaml.safe_load(lock.read_text())["stages"].items()} == outs


def test_the_resume_fingerprint_covers_the_training_code_and_nothing_else(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src)
    pkg = src / "distill_step_by_step"
    before = code_fingerprint(src=src)
    for cosmetic in ("report/presentation.py", "report/report.py", "report/plots.py", "report/templates/results.md.j2",
                     "ops/grid.py", "ops/kit.py"):
        with (pkg / cosmetic).open("a") as fh:
            fh.write("# an edit that changes no cell\n")
    assert code_fingerprint(src=src) == before
    with (pkg / "methods" / "distill.py").open("a") as fh:
        fh.write("# another method's code\n")
    assert code_fingerprint(src=src) == before and code_fingerprint(src=src, method="distill") != \
        code_fingerprint(src=REPO / "src", method="distill")
    with (pkg / "train" / "training.py").open("a") as fh:
        fh.write("# an edit to the training code\n")
    assert code_fingerprint(src=src) != before


def test_grid_commit_leaves_a_stage_whose_data_parameters_or_outputs_changed():
    from distill_step_by_step.ops.grid import _not_code

    code = {"changed deps": {"../../src/distill_step_by_step/train/training.py": "modified",
                             "../../stages/train_score.py": "modified"}}
    assert _not_code([code, {"changed outs": {"models/smoke/x": "not in cache"}}]) is None
    assert _not_code([{"changed deps": {"data/smoke/corpus/anli1/train.jsonl": "modified"}}]) == \
        "data/smoke/corpus/anli1/train.jsonl modified"
    assert "grids/smoke/params.yaml" in _not_code([code, {"changed deps": {"grids/smoke/params.yaml": {"train.lr": "modified"}}}])
    assert _not_code([{"changed outs": {"results/smoke/x/metrics.json": "modified"}}]) == \
        "outputs changed: results/smoke/x/metrics.json modified"


def test_each_method_is_the_file_named_like_it():
    """A cell's dep ``methods/${item.method}.py`` is its method's file: every registered method has one."""
    from distill_step_by_step.methods.registry import registry

    assert set(method_files(REPO / "src")) == set(registry())


@pytest.mark.slow
def test_a_checkpoints_weights_are_not_part_of_what_dvc_versions(project):
    """DVC hashes a cell's checkpoint without its weights (``.dvcignore``): a retrain on another CPU model, whose
    weights differ in their last bits while its scores do not, leaves ``dvc.lock`` as it is."""
    stage = "train_score@anli1-finetune-tiny-t5-1.0-0"
    run([sys.executable, "-m", "distill_step_by_step.profiles", "run", "smoke", "-S", "run.keep_weights=true",
         "-S", "grid.methods=[finetune]", "-S", "grid.seeds=[0]", "-S", "grid.fractions=[1.0]"], project)
    cell = project / "models" / "anli1" / "finetune" / "tiny-t5" / "f1.0-s0"
    weights = cell / "model.safetensors"
    assert weights.is_file()
    [out] = [o for o in yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]["outs"]
             if o["path"] == "models/anli1/finetune/tiny-t5/f1.0-s0"]
    assert out["nfiles"] == len(list(cell.iterdir())) - 1  # every file of the checkpoint but its weights
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1  # another CPU's last bit
    weights.write_bytes(bytes(blob))
    status = run(["dvc", "status", f"dvc.yaml:{stage}"], project).stdout
    assert "up to date" in status, status
