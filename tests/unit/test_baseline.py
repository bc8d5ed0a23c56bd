"""`Baseline` keeps River's exponentially weighted statistics as plain floats: the numbers must
stay those of River's `EWMean` / `EWVar`, bit for bit, or decisions would drift."""

from __future__ import annotations

import random

import pytest
from river import stats

from detectors.state import MAX_IDLE_WINDOWS, Baseline, WindowFeatures


class RiverBaseline:
    """What `Baseline` was before: seven River statistics, fed one window at a time."""

    def __init__(self, fading_factor: float) -> None:
        self.rate_mean = stats.EWMean(fading_factor)
        self.rate_var = stats.EWVar(fading_factor)
        self.rate_slow = stats.EWMean(fading_factor / 25)
        self.error_ratio = stats.EWMean(fading_factor)
        self.auth_failure_ratio = stats.EWMean(fading_factor)
        self.path_diversity = stats.EWMean(fading_factor)
        self.latency = stats.EWMean(fading_factor)
        self.windows = 0

    def learn(self, w: WindowFeatures) -> None:
        self.rate_mean.update(w.requests)
        self.rate_var.update(w.requests)
        slow = self.rate_slow.get()
        self.rate_slow.update(w.requests if self.windows == 0 else min(w.requests, 2 * slow + 1))
        if w.requests:
            self.error_ratio.update(w.error_ratio)
            self.auth_failure_ratio.update(w.auth_failure_ratio)
            self.path_diversity.update(w.path_diversity)
            self.latency.update(w.latency_ms)
        self.windows += 1

    def learn_idle(self, windows: int) -> None:
        for _ in range(min(windows, MAX_IDLE_WINDOWS)):
            self.rate_mean.update(0)
            self.rate_var.update(0)
            self.rate_slow.update(0)
        self.windows += windows


def _numbers(b: Baseline) -> tuple[float, ...]:
    return (
        b.rate_mean,
        b.rate_var,
        b.rate_slow,
        b.error_ratio,
        b.auth_failure_ratio,
        b.path_diversity,
        b.latency,
        b.windows,
    )


def _river_numbers(r: RiverBaseline) -> tuple[float, ...]:
    return (
        r.rate_mean.get(),
        r.rate_var.get(),
        r.rate_slow.get(),
        r.error_ratio.get(),
        r.auth_failure_ratio.get(),
        r.path_diversity.get(),
        r.latency.get(),
        r.windows,
    )


@pytest.mark.parametrize("seed", range(12))
def test_baseline_is_river_bit_for_bit(seed: int) -> None:
    rng = random.Random(seed)
    fading = rng.choice([0.05, 0.1, 0.2, 0.5, rng.uniform(0.001, 0.9)])
    ours, river = Baseline(fading), RiverBaseline(fading)
    if rng.random() < 0.3:  # idle windows before any busy one (the means start at 0)
        ours.learn_idle(3)
        river.learn_idle(3)
    for _ in range(400):
        requests = rng.choice([0, 1, 2, rng.randint(0, 30), rng.randint(100, 5000)])
        w = WindowFeatures(
            requests,
            rng.choice([0.0, rng.random()]),
            rng.choice([0.0, 1.0, rng.random()]),
            rng.random(),
            rng.choice([0.0, rng.expovariate(0.02)]),
        )
        ours.learn(w)
        river.learn(w)
        if rng.random() < 0.4:
            idle = rng.choice([1, 2, rng.randint(1, 80)])
            ours.learn_idle(idle)
            river.learn_idle(idle)
        assert _numbers(ours) == _river_numbers(river)  # exact: not approx


def test_first_ratio_is_taken_as_is_after_empty_windows() -> None:
    # River's mean starts at the first value it is given, whatever came before: ratios are only
    # learned from windows with requests, so their first value can come long after the rate's.
    b = Baseline(0.1)
    b.learn(WindowFeatures(0, 0.0, 0.0, 0.0, 0.0))
    b.learn(WindowFeatures(4, 0.5, 0.25, 0.75, 80.0))
    assert (b.error_ratio, b.auth_failure_ratio, b.path_diversity, b.latency) == (
        0.5,
        0.25,
        0.75,
        80.0,
    )
    assert b.rate_mean == pytest.approx(0.4)


def test_fading_factor_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        Baseline(1.5)
