"""How sure a comparison is: paired bootstrap intervals over test examples and seeds, and verdicts from them.

Every method of a (dataset, student, fraction) point is scored on the same test examples, so a
comparison is paired: each bootstrap replicate draws the test examples once (with replacement) for both
sides, and, with two or more seeds, draws the seeds too (seed ``s`` of one method with seed ``s`` of the
other: the same training subset). A replicate's difference is the mean over the drawn seeds and examples.
The draws are weights: multinomial counts of each example and each seed, so a replicate is two matrix
products instead of an index gather over ``seeds x examples``. ``scipy.stats.bootstrap`` resamples along
one axis; this design resamples along two (seeds, then examples), which it does not express.

The draws come from a fixed seed: the same predictions give the same interval on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
REPLICATES = 4000
SEED = 20230502  # the paper's arXiv date: any fixed number would do


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95% percentile-bootstrap interval, as fractions (0.012 = 1.2 points)."""

    estimate: float
    low: float
    high: float
    seeds: int
    examples: int

    def verdict(self) -> str:
        """``ahead`` when the whole interval is above 0, ``behind`` when below, else ``cannot tell``."""
        if self.low > 0:
            return "ahead"
        if self.high < 0:
            return "behind"
        return "cannot tell"

    def points(self) -> str:
        """``+1.1 points (95%: -1.4 to +3.5)``."""
        return f"{100 * self.estimate:+.1f} points (95%: {100 * self.low:+.1f} to {100 * self.high:+.1f})"


class Bootstrap:
    """Paired bootstrap replicates for one test set of ``examples`` examples, shared by every comparison on it
    (the same draws for every method: common random numbers make the comparisons consistent)."""

    def __init__(self, examples: int, replicates: int = REPLICATES, seed: int = SEED):
        self.examples, self.replicates = examples, replicates
        self.rng = np.random.default_rng(seed)
        uniform = np.full(examples, 1.0 / examples)
        self.example_weights = self.rng.multinomial(examples, uniform, size=replicates).astype(np.float32)
        self._seed_weights: dict[int, np.ndarray] = {}

    def seed_weights(self, seeds: int) -> np.ndarray:
        """(replicates, seeds) multinomial counts of the seeds drawn (all ones for a single seed)."""
        if seeds not in self._seed_weights:
            self._seed_weights[seeds] = (np.ones((self.replicates, 1), np.float32) if seeds == 1 else
                                         self.rng.multinomial(seeds, np.full(seeds, 1.0 / seeds),
                                                              size=self.replicates).astype(np.float32))
        return self._seed_weights[seeds]

    def means(self, correct: np.ndarray, seed_weights: np.ndarray | None = None) -> np.ndarray:
        """Each replicate's accuracy of a (seeds, examples) 0/1 matrix."""
        correct = np.asarray(correct, np.float32)
        seeds, n = correct.shape
        if n != self.examples:
            raise ValueError(f"{n} predictions for a test set of {self.examples}")
        w = self.seed_weights(seeds) if seed_weights is None else seed_weights
        # sum over seeds s and examples i of W[b, s] * C[b, i] * correct[s, i], over seeds * examples
        return ((w @ correct) * self.example_weights).sum(axis=1) / (seeds * n)

    def accuracy(self, correct: np.ndarray) -> Interval:
        """A method's accuracy over its seeds, with its interval."""
        correct = np.asarray(correct, np.float32)
        return self._interval(float(correct.mean()), self.means(correct), correct.shape[0])

    def difference(self, a: np.ndarray, b: np.ndarray) -> Interval:
        """``accuracy(a) - accuracy(b)`` on the same examples. ``a`` and ``b`` are (seeds, examples); seed ``s``
        of one is paired with seed ``s`` of the other when both have the same seeds, and a side with one row
        (the teacher, which has no seeds) is the same in every seed draw."""
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if a.shape[0] > 1 and b.shape[0] > 1 and a.shape[0] != b.shape[0]:
            raise ValueError(f"cannot pair {a.shape[0]} seeds with {b.shape[0]}")
        seeds = max(a.shape[0], b.shape[0])
        w = self.seed_weights(seeds)
        diffs = self.means(a, w if a.shape[0] > 1 else None) - self.means(b, w if b.shape[0] > 1 else None)
        return self._interval(float(a.mean() - b.mean()), diffs, seeds)

    def _interval(self, estimate: float, replicates: np.ndarray, seeds: int) -> Interval:
        low, high = np.quantile(replicates, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
        return Interval(round(estimate, 6), round(float(low), 6), round(float(high), 6), seeds, self.examples)
