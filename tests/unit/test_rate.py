"""``etl.crawl.messages.Rate``: calls per second over a sliding window of (time, count) samples.

The rate is (calls now - calls at the oldest kept sample) / (now - its time). Samples older
than the window are dropped, but two are always kept, so a slow trickle still has a rate.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.crawl.messages import Rate


def rates(rate: Rate, samples: list[tuple[float, int]]) -> list[float]:
    """What ``rate.add`` answers for each sample, in order."""
    return [rate.add(now, calls) for now, calls in samples]


def test_a_first_sample_has_no_rate() -> None:
    """One sample: no time has passed, the rate is 0.0 (not a ZeroDivisionError)."""
    rate = Rate()
    assert rate.add(100.0, 42) == 0.0


def test_samples_inside_the_window_measure_from_the_first() -> None:
    """All samples within the window: the rate is taken from the very first sample."""
    rate = Rate(window=5.0)
    assert rates(rate, [(0.0, 0), (1.0, 10), (2.0, 30), (4.0, 40)]) == [0.0, 10.0, 15.0, 10.0]
    assert list(rate.samples) == [(0.0, 0), (1.0, 10), (2.0, 30), (4.0, 40)]


def test_samples_older_than_the_window_are_dropped() -> None:
    """At t=7 with a 5 s window, samples at 0 and 1 are too old: the rate runs from t=2."""
    rate = Rate(window=5.0)
    rates(rate, [(0.0, 0), (1.0, 10), (2.0, 30), (3.0, 35)])
    assert rate.add(7.0, 80) == (80 - 30) / (7.0 - 2.0) == 10.0
    assert list(rate.samples) == [(2.0, 30), (3.0, 35), (7.0, 80)]


def test_a_sample_exactly_one_window_old_is_kept() -> None:
    """The window is inclusive: a sample exactly ``window`` seconds old still counts."""
    rate = Rate(window=5.0)
    assert rates(rate, [(0.0, 0), (3.0, 30), (5.0, 40)]) == [0.0, 10.0, 8.0]
    assert rate.add(5.5, 41) == (41 - 30) / (5.5 - 3.0)  # now t=0 is 5.5 s old: dropped


def test_trimming_keeps_at_least_two_samples() -> None:
    """Samples far apart (a slow or stalled crawl): the previous sample is always kept, so the
    rate is the one of the last interval, never 0.0 for want of samples."""
    rate = Rate(window=5.0)
    assert rates(rate, [(0.0, 0), (100.0, 50)]) == [0.0, 0.5]
    assert rate.add(200.0, 150) == 1.0
    assert list(rate.samples) == [(100.0, 50), (200.0, 150)]
    assert rate.add(1000.0, 150) == 0.0  # nothing happened in the last interval
    assert len(rate.samples) == 2


@pytest.mark.parametrize(
    "samples",
    [
        [(1.0, 5), (1.0, 9)],  # two samples at the same instant
        [(5.0, 10), (4.0, 12)],  # a clock that stepped back
    ],
)
def test_no_elapsed_time_gives_zero(samples: list[tuple[float, int]]) -> None:
    """When the oldest kept sample is not older than now, the rate is 0.0."""
    assert rates(Rate(), samples)[-1] == 0.0


def test_the_default_window_is_five_seconds() -> None:
    rate = Rate()
    assert rate.window == 5.0
    rates(rate, [(0.0, 0), (1.0, 1), (5.0, 5)])
    assert rate.add(6.0, 12) == (12 - 1) / (6.0 - 1.0)


def reference(samples: list[tuple[float, int]], window: float) -> float:
    """The rate after all of ``samples`` (times non-decreasing): from the oldest sample at most
    ``window`` old, or from the one before the last if that is older."""
    now, calls = samples[-1]
    first = next(n for n, (then, _) in enumerate(samples) if now - then <= window)
    then, before = samples[min(first, max(len(samples) - 2, 0))]
    return (calls - before) / (now - then) if now > then else 0.0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 50)), min_size=1, max_size=30),
    st.sampled_from([0.5, 1.0, 2.0, 5.0]),
)
def test_rate_matches_the_reference(steps: list[tuple[int, int]], window: float) -> None:
    """Random increasing sample sequences (times in quarter seconds, counts that only grow):
    every answer equals the reference computed from the whole history."""
    samples: list[tuple[float, int]] = []
    now, calls = 0.0, 0
    for dt, dcalls in steps:
        now, calls = now + dt / 4, calls + dcalls
        samples.append((now, calls))
    rate = Rate(window=window)
    for n, (t, c) in enumerate(samples, start=1):
        assert rate.add(t, c) == reference(samples[:n], window)
        assert len(rate.samples) >= min(n, 2)
