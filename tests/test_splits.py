"""Split invariants: nested fractions, disjoint from validation and test, deterministic."""

import pytest

from distill_step_by_step.data.splits import make_splits, write_splits
from distill_step_by_step.jsonio import read_jsonl, read_lines
from distill_step_by_step.settings import SplitConfig

FRACTIONS = (0.125, 0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def ids(corpus):
    pool = [r["id"] for r in read_jsonl(corpus / "cqa" / "train.jsonl")]
    test = [r["id"] for r in read_jsonl(corpus / "cqa" / "test.jsonl")]
    return pool, test


def test_nested_disjoint_and_sized(ids):
    pool, test = ids
    s = make_splits(pool, test, SplitConfig(), FRACTIONS, (0, 1, 2))
    valid, test_set = set(s["valid"]), set(s["test"])
    assert len(valid) == round(0.1 * len(pool)) and valid <= set(pool)
    assert test_set == set(test) and not valid & test_set
    for seed in (0, 1, 2):
        sets = [set(s["train"][seed][f]) for f in FRACTIONS]
        for small, large in zip(sets, sets[1:]):
            assert small < large
        assert not sets[-1] & valid and not sets[-1] & test_set
        assert sets[-1] == set(pool) - valid  # 100% is the whole pool
        for f, chosen in zip(FRACTIONS, sets):
            assert len(chosen) == round(f * len(sets[-1]))
    # different seeds draw different subsets, same validation for all
    assert set(s["train"][0][0.125]) != set(s["train"][1][0.125])


def test_deterministic_and_independent_of_other_fractions(ids):
    pool, test = ids
    a = make_splits(pool, test, SplitConfig(), (0.25, 1.0), (0,))
    b = make_splits(pool, test, SplitConfig(), (0.125, 0.25, 0.5, 1.0), (3, 0))
    assert a["valid"] == b["valid"]
    # adding fractions or seeds leaves existing manifests unchanged, so DVC reruns nothing for them
    assert a["train"][0][0.25] == b["train"][0][0.25]
    assert a == make_splits(pool, test, SplitConfig(), (0.25, 1.0), (0,))


def test_pool_cap_valid_count_and_test_subsample(ids):
    pool, test = ids
    cfg = SplitConfig(valid_size=50, pool_size=200, test_size=300), (0.5, 1.0), (0, 1)
    s = make_splits(pool, test, *cfg)
    assert len(s["valid"]) == 50 and len(s["test"]) == 300 and s["pool_size"] == 200
    capped = make_splits(pool, test, SplitConfig(valid_size=0.1, valid_max=48), (1.0,), (0,))
    uncapped = make_splits(pool, test, SplitConfig(valid_size=0.1), (1.0,), (0,))
    assert len(capped["valid"]) == 48 and set(capped["valid"]) < set(uncapped["valid"])
    assert set(s["train"][0][1.0]) == set(s["train"][1][1.0])  # same capped pool for every seed
    assert len(s["train"][0][0.5]) == 100
    assert set(s["test"]) <= set(test)


def test_rejects_bad_fractions(ids):
    pool, test = ids
    with pytest.raises(ValueError, match="not in"):
        make_splits(pool, test, SplitConfig(), (0.0,), (0,))
    with pytest.raises(ValueError, match="not in"):
        make_splits(pool, test, SplitConfig(), (1.5,), (0,))


def test_written_manifests(tmp_path, corpus):
    cfg = SplitConfig(valid_size=10), (0.5, 1.0), (0,)
    summary = write_splits(corpus / "anli1", tmp_path / "anli1", tmp_path / "anli1.ids", *cfg)
    assert summary["valid"] == 10 and summary["test"] == 1000 and summary["pool_available"] == 990
    assert len(read_lines(tmp_path / "anli1" / "seed_0" / "train_0.5.ids")) == 495
    assert len(read_lines(tmp_path / "anli1" / "valid.ids")) == 10
