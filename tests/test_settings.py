"""Every setting is checked in one place when a stage starts; errors name the key path."""

import copy

import pytest

from distill_step_by_step.ops.grid import grid_params
from distill_step_by_step.ops.profiles import PROFILE_DIR, apply_profile, load_profile
from distill_step_by_step.settings import SettingsError, parse_settings, read_params

from conftest import REPO


@pytest.fixture(scope="module")
def params():
    return read_params(REPO / "params.yaml")


@pytest.mark.parametrize("profile", sorted(p.stem for p in (REPO / PROFILE_DIR).glob("*.yaml")))
def test_params_with_every_profile_applied_are_valid(params, profile):
    settings = parse_settings(apply_profile(params, load_profile(str(REPO / PROFILE_DIR / f"{profile}.yaml"))))
    for student in settings.grid.students:
        assert student in settings.students
    assert set(settings.grid.datasets) <= set(settings.data.datasets)


def test_the_gpu_profile_is_the_papers_comparison_on_full_test_sets(params):
    s = parse_settings(apply_profile(params, load_profile(str(REPO / PROFILE_DIR / "gpu.yaml"))))
    assert set(s.grid.datasets) == {"cqa", "svamp", "esnli", "anli1"}
    assert s.grid.methods == ["finetune", "distill", "step_by_step"]
    assert [s.student(n).kind for n in s.grid.students] == ["causal", "causal"]  # SmolLM2-135M, Gemma-3-270M
    assert s.grid.fractions == [0.125, 0.25, 0.5, 1.0] and s.grid.seeds == [0, 1, 2] and len(s.grid.cells()) == 288
    assert s.split.test_size is None and s.split.pool_size is None  # the full official test sets, all the data
    grid = parse_settings(grid_params("gpu", REPO))  # its grid pipeline's own paths, beside the CPU demo's
    assert (grid.paths.results, grid.paths.reports, grid.paths.params) == ("results/gpu", "reports/gpu",
                                                                          "grids/gpu/params.yaml")
    # the paper trains every weight with the checkpoint's own dropout (the CPU demo's speed-ups are not)
    assert s.train.freeze_embeddings is False and s.train.dropout is None and s.train.output_vocabulary == "all"


def test_the_committed_params_are_valid(params):
    settings = parse_settings(params)
    assert settings.method("step_by_step").alpha == params["methods"]["step_by_step"]["alpha"]


def _changed(params, dotted: str, value):
    out = copy.deepcopy(params)
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


@pytest.mark.parametrize("key,value,message", [
    ("methods.step_by_step.alhpa", 0.3, "methods.step_by_step.alhpa: unknown setting; step_by_step takes alpha, labels"),
    ("methods.step_by_step.alpha", 1.5, "methods.step_by_step.alpha: must be <= 1, got 1.5"),
    ("methods.step_by_step.alpha", "high", "methods.step_by_step.alpha: should be a number, got str 'high'"),
    ("methods.finetune.alpha", 0.5, "methods.finetune.alpha: unknown setting; finetune takes no settings"),
    ("methods.cot", {}, "methods.cot: unknown method"),
    ("train.lr", -1e-4, "train.lr: must be > 0, got -0.0001"),
    ("train.batch_size", 0, "train.batch_size: must be >= 1, got 0"),
    ("train.batch_szie", 8, "train.batch_szie: unknown setting"),
    ("train.max_steps", 2.5, "train.max_steps: should be an integer, got float 2.5"),
    ("train.dropout", 1.5, "train.dropout: must be <= 0.9, got 1.5"),
    ("train.freeze_embeddings", "no", "train.freeze_embeddings: should be true or false, got str 'no'"),
    ("train.mixed_precision", "fp8", "train.mixed_precision: must be one of auto, no, bf16, fp16; got 'fp8'"),
    ("run.test_batch_size", 0, "run.test_batch_size: must be >= 1, got 0"),
    ("run.save_every_minutes", 0, "run.save_every_minutes: must be > 0, got 0.0"),
    ("test.rationales", "yes", "test.rationales: should be true or false, got str 'yes'"),
    ("split.pool_size", -5, "split.pool_size: must be >= 1, got -5"),
    ("split.pool_size", 0, "split.pool_size: must be >= 1, got 0"),
    ("split.valid_size", 0, "split.valid_size: must be > 0, got 0.0"),
    ("grid.fractions", [0.5, 1.5], r"grid.fractions\[1\]: must be <= 1, got 1.5"),
    ("grid.fractions", [0.0, 1.0], r"grid.fractions\[0\]: must be > 0, got 0.0"),
    ("grid.fractions", [0.5, 1], r"grid.fractions\[1\]: write fractions as decimals \(1.0, not 1\)"),
    ("grid.seeds", [0, -1], r"grid.seeds\[1\]: must be >= 0, got -1"),
    ("grid.seeds", [0, 0], "grid.seeds: repeats a value"),
    ("grid.methods", ["finetune", "cot"], r"grid.methods\[1\]: must be one of distill, finetune, single_task, step_by_step"),
    ("grid.students", ["minilm-l6", "t5-tiny"], r"grid.students\[1\]: no student 't5-tiny' under students"),
    ("grid.datasets", ["esnli", "mnli"], r"grid.datasets\[1\]: must be one of cqa, svamp, esnli, anli1"),
    ("data.datasets", ["anli1"], r"grid.datasets\[0\]: 'esnli' is not prepared: add it to data.datasets"),
    ("students.minilm-l6.kind", "rnn", "students.minilm-l6.kind: must be one of causal, encoder-decoder, seq2seq"),
    ("students.minilm-l6.keep_layers", "last", "students.minilm-l6.keep_layers: must be one of first, spread"),
    ("students.minilm-l6.encoder_layers", 0, "students.minilm-l6.encoder_layers: must be >= 1, got 0"),
    ("teacher.name", "gpt", "teacher.name: must be one of palm, http, local, human; got 'gpt'"),
    ("teacher.max_examples", 0, "teacher.max_examples: must be >= 1, got 0"),
    ("teacher.max_failed_share", 1.5, "teacher.max_failed_share: must be <= 1, got 1.5"),
    ("teacher.max_failed_share", -0.01, "teacher.max_failed_share: must be >= 0, got -0.01"),
    ("teacher.max_failed_share", "1%", "teacher.max_failed_share: should be a number, got str '1%'"),
    ("teacher.http.concurency", 4, "teacher.http.concurency: unknown setting"),
    ("teacher.http.timeout", 0, "teacher.http.timeout: must be > 0, got 0.0"),
    ("teacher.local.batch_size", 0, "teacher.local.batch_size: must be >= 1, got 0"),
    ("launch", ["python"], "launch: should be a string"),
    ("paths.reprts", "x", "paths.reprts: unknown setting"),
    ("trian", {}, "trian: unknown settings group"),
])
def test_bad_settings_name_their_key(params, key, value, message):
    with pytest.raises(SettingsError, match=f"^params.yaml: {message}"):
        parse_settings(_changed(params, key, value))


def test_an_api_key_in_place_of_its_variable_name_is_refused_without_echoing_it(params):
    secret = "sk-live-0123456789abcdef"
    with pytest.raises(SettingsError, match="teacher.http.api_key_env: must be the NAME") as err:
        parse_settings(_changed(params, "teacher.http.api_key_env", secret))
    assert secret not in str(err.value)


def test_the_failed_share_defaults_to_one_percent_and_takes_0_and_1(params):
    assert parse_settings(params).teacher.max_failed_share == 0.01
    without = copy.deepcopy(params)
    del without["teacher"]["max_failed_share"]
    assert parse_settings(without).teacher.max_failed_share == 0.01  # the same default when the key is absent
    for share in (0, 1):  # integers read as the shares they are
        assert parse_settings(_changed(params, "teacher.max_failed_share", share)).teacher.max_failed_share == share


def test_yaml_1_1_exponents_read_as_numbers(params):
    # PyYAML reads `1e-4` (no decimal point) as a string; as a number setting it is still a number
    assert parse_settings(_changed(params, "train.lr", "1e-4")).train.lr == 1e-4
