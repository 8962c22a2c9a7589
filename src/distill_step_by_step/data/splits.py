"""The ``split`` stage: id manifests for validation, test and nested training fractions.

* validation: carved once from the training pool with ``valid_seed`` (``valid_size``, at most
  ``valid_max``) and shared by every seed and fraction (a fixed held-out part, as model selection needs);
* training pool: the rest, optionally capped at ``pool_size`` examples (same cap for all seeds);
* training fractions: per seed, one permutation of the pool; fraction ``f`` takes its first
  ``round(f * N)`` ids, so every smaller fraction is a subset of every larger one;
* test: the official test split, optionally subsampled to ``test_size`` with ``valid_seed``.

Files (one id per line, never copies of the data)::

    <out>/valid.ids  <out>/seed_<s>/train_<fraction>.ids
    <test_out>  (e.g. data/test_sets/<dataset>.ids: kept apart so that what scores only the test set,
                 like the teacher baseline, does not rerun when fractions or seeds change)

A fraction's manifest depends only on its seed and value (never on the other fractions and seeds), so
adding a fraction or a seed leaves every existing manifest, and every cell trained on it, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonio import atomic_dir, read_jsonl, write_lines
from ..settings import SplitConfig


def fraction_text(fraction: float) -> str:
    """A data fraction as stage names and paths spell it (``0.25``, ``1.0``): as DVC's matrix writes the
    float of ``grid.fractions`` into ``dvc.yaml``. A fraction is a float everywhere else."""
    return str(float(fraction))


def train_ids_path(splits_dir: str | Path, seed: int | str, fraction: float) -> Path:
    """The manifest of one seed's training fraction."""
    return Path(splits_dir) / f"seed_{seed}" / f"train_{fraction_text(fraction)}.ids"


def valid_ids_path(splits_dir: str | Path) -> Path:
    """The validation manifest shared by every seed and fraction."""
    return Path(splits_dir) / "valid.ids"


def _count(size: float, n: int) -> int:
    k = int(size) if size >= 1 else int(round(size * n))
    return min(max(k, 1), n - 1)


def make_splits(pool_ids: list[str], test_ids: list[str], cfg: SplitConfig, fractions: Sequence[float],
                seeds: Sequence[int]) -> dict[str, Any]:
    """Compute the manifests (pure function of the ids and the config)."""
    if len(pool_ids) < 2:
        raise ValueError("the training pool needs at least 2 examples to carve a validation set")
    for f in fractions:
        if not 0 < float(f) <= 1:
            raise ValueError(f"fraction {f} is not in (0, 1]")
    perm = np.random.RandomState(cfg.valid_seed).permutation(len(pool_ids))
    n_valid = _count(cfg.valid_size, len(pool_ids))
    if cfg.valid_max is not None:
        n_valid = min(n_valid, int(cfg.valid_max))
    valid_idx = np.sort(perm[:n_valid])
    rest = perm[n_valid:]
    if cfg.pool_size is not None:
        rest = rest[: int(cfg.pool_size)]
    rest = np.sort(rest)  # pool order, so the seed permutation below alone decides membership
    if cfg.test_size is not None and cfg.test_size < len(test_ids):
        test_idx = np.sort(np.random.RandomState(cfg.valid_seed).permutation(len(test_ids))[: int(cfg.test_size)])
        test = [test_ids[i] for i in test_idx]
    else:
        test = list(test_ids)
    train: dict[int, dict[str, list[str]]] = {}
    for seed in seeds:
        order = np.random.RandomState(seed).permutation(len(rest))
        train[seed] = {}
        for f in fractions:
            k = max(1, int(round(float(f) * len(rest))))
            chosen = np.sort(rest[order[:k]])
            train[seed][float(f)] = [pool_ids[i] for i in chosen]
    return {"valid": [pool_ids[i] for i in valid_idx], "test": test, "train": train, "pool_size": len(rest)}


def write_splits(corpus_dir: str | Path, out_dir: str | Path, test_out: str | Path, cfg: SplitConfig,
                 fractions: Sequence[float], seeds: Sequence[int]) -> dict[str, Any]:
    """Read the corpus ids of one dataset and write its manifests; returns the summary."""
    corpus_dir = Path(corpus_dir)
    pool_ids = [r["id"] for r in read_jsonl(corpus_dir / "train.jsonl")]
    test_ids = [r["id"] for r in read_jsonl(corpus_dir / "test.jsonl")]
    splits = make_splits(pool_ids, test_ids, cfg, fractions, seeds)
    summary = {
        "pool_available": len(pool_ids) - len(splits["valid"]),
        "pool_used": splits["pool_size"],
        "valid": len(splits["valid"]),
        "test": len(splits["test"]),
        "test_available": len(test_ids),
        "train": {str(s): {fraction_text(f): len(ids) for f, ids in per.items()} for s, per in splits["train"].items()},
    }
    with atomic_dir(out_dir) as tmp:
        write_lines(valid_ids_path(tmp), splits["valid"])
        for seed, per in splits["train"].items():
            for fraction, ids in per.items():
                write_lines(train_ids_path(tmp, seed, fraction), ids)
    write_lines(test_out, splits["test"])
    return summary
