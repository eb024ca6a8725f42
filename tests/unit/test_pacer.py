"""``etl.tencent.pacer.Pacer`` at rates below one call per second: the target is kept exactly, and a
600xx slow-down never makes calls come faster than it (nor slower than it needs)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.tencent.pacer import Pacer
from tests.unit.test_client import fake_time


def starts(pacer: Pacer, clock: object, calls: int) -> list[float]:
    """The times at which ``calls`` successive calls start."""
    times = []
    for _ in range(calls):
        pacer.wait()
        times.append(clock())  # type: ignore[operator]
    return times


def gaps(times: list[float]) -> list[float]:
    """The intervals between successive start times."""
    return [b - a for a, b in itertools.pairwise(times)]


def test_a_fifth_of_a_call_per_second_spaces_calls_five_seconds_apart() -> None:
    """At 0.2 calls/s, successive calls start exactly 5 s apart (not 1 s: no silent 1/s floor)."""
    clock, sleep, _ = fake_time()
    pacer = Pacer(0.2, clock=clock, sleep=sleep)
    assert gaps(starts(pacer, clock, 6)) == pytest.approx([5.0] * 5)
    assert pacer.rate == pytest.approx(0.2)


def test_a_slow_rate_stays_exact_after_a_rate_limit_answer() -> None:
    """After a 600xx at 0.2 calls/s, the next call waits at least 5 s and later calls are again
    5 s apart: the slow-down is bounded by the target, never faster than it."""
    clock, sleep, _ = fake_time()
    pacer = Pacer(0.2, clock=clock, sleep=sleep)
    before = starts(pacer, clock, 2)
    pacer.slow_down()
    assert pacer.rate == pytest.approx(0.2)
    after = starts(pacer, clock, 4)
    assert after[0] - before[-1] >= 5.0
    assert after[0] - before[-1] <= Pacer.PAUSE
    assert gaps(after) == pytest.approx([5.0] * 3)


def test_a_slow_rate_survives_a_new_share() -> None:
    """set_rate to 0.1 calls/s after a slow-down spaces calls 10 s apart, not 1 s."""
    clock, sleep, _ = fake_time()
    pacer = Pacer(0.2, clock=clock, sleep=sleep)
    pacer.slow_down()
    pacer.set_rate(0.1)
    assert pacer.rate == pytest.approx(0.1)
    times = starts(pacer, clock, 4)
    assert gaps(times) == pytest.approx([10.0] * 3)


def test_repeated_slow_downs_stay_bounded_at_fast_rates() -> None:
    """At 100 calls/s, many 600xx answers in a row slow the pace to SLOWEST at most."""
    clock, sleep, _ = fake_time()
    pacer = Pacer(100, clock=clock, sleep=sleep)
    for _ in range(50):
        pacer.slow_down()
    assert pacer.rate == pytest.approx(1 / Pacer.SLOWEST)
    starts(pacer, clock, 1)
    assert max(gaps(starts(pacer, clock, 3))) <= Pacer.SLOWEST + 1e-9


@given(rate=st.floats(min_value=1e-3, max_value=1e4), slowdowns=st.integers(0, 30))
def test_no_gap_is_shorter_than_the_target(rate: float, slowdowns: int) -> None:
    """Whatever the rate and however many 600xx answers, no two calls start closer than the
    target interval, and none farther than max(SLOWEST, target) once the pause is over."""
    clock, sleep, _ = fake_time()
    pacer = Pacer(rate, clock=clock, sleep=sleep)
    starts(pacer, clock, 1)
    for _ in range(slowdowns):
        pacer.slow_down()
    times = starts(pacer, clock, 5)
    target = 1 / rate
    assert all(gap >= target * (1 - 1e-9) for gap in gaps(times))
    assert all(gap <= max(Pacer.SLOWEST, target) * (1 + 1e-9) for gap in gaps(times))


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, math.inf])
def test_a_rate_that_is_not_positive_and_finite_is_refused(rate: float) -> None:
    """Pacer(0), negative, NaN and infinite rates raise ValueError rather than pace nonsense."""
    with pytest.raises(ValueError, match="positive"):
        Pacer(rate)
    with pytest.raises(ValueError, match="positive"):
        Pacer(1.0).set_rate(rate)
