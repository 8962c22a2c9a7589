"""Paired bootstrap intervals on planted predictions whose answer is known."""

import numpy as np
import pytest

from distill_step_by_step.report.intervals import Bootstrap, Interval

N = 1000


def _planted(k: int, seeds: int = 1) -> np.ndarray:
    rng = np.random.default_rng(7)
    base = (rng.random(N) < 0.6).astype(np.float32)
    return np.stack([base] * seeds)


def test_identical_predictions_differ_by_zero_with_an_interval_that_contains_zero():
    a = _planted(0, seeds=2)
    iv = Bootstrap(N).difference(a, a.copy())
    assert iv.estimate == 0 and iv.low <= 0 <= iv.high and iv.verdict() == "cannot tell"


def test_sixty_more_right_of_a_thousand_is_ahead_and_the_reverse_behind():
    b = _planted(0)
    wrong = np.flatnonzero(b[0] == 0)[:60]
    a = b.copy()
    a[0, wrong] = 1  # right on 60 more examples
    boot = Bootstrap(N)
    iv = boot.difference(a, b)
    assert iv.estimate == pytest.approx(0.06) and iv.low > 0 and iv.verdict() == "ahead"
    assert boot.difference(b, a).verdict() == "behind"
    # paired: far narrower than two independent accuracies' intervals would make it
    assert iv.high - iv.low < 0.5 * (boot.accuracy(a).high - boot.accuracy(a).low + boot.accuracy(b).high - boot.accuracy(b).low)


def test_seed_to_seed_variation_widens_the_interval():
    boot = Bootstrap(N)
    b = _planted(0, seeds=3)
    steady = b.copy()
    steady[:, :40] = 1 - b[:, :40]  # every seed disagrees with b on the same 40 examples
    rng = np.random.default_rng(3)
    noisy = b.copy()
    for s, k in enumerate((0, 40, 80)):  # the same mean difference on average, spread over the seeds
        flip = rng.choice(N, size=k, replace=False)
        noisy[s, flip] = 1 - b[s, flip]
    narrow, wide = boot.difference(steady, b), boot.difference(noisy, b)
    assert (wide.high - wide.low) > (narrow.high - narrow.low)


def test_an_interval_says_its_seeds_and_reads_in_points():
    iv = Bootstrap(N).difference(_planted(0), _planted(0))
    assert iv.seeds == 1 and iv.examples == N
    assert Interval(0.011, -0.014, 0.035, 2, 1000).points() == "+1.1 points (95%: -1.4 to +3.5)"
    with pytest.raises(ValueError, match="cannot pair 2 seeds with 3"):
        Bootstrap(N).difference(_planted(0, 2), _planted(0, 3))
