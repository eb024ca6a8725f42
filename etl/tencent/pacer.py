"""The client's pacing: calls spaced evenly to the run's budget, slowed by a rate-limit answer."""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

from etl.errors import Stopped

WINDOW = 1.0 - 1e-9  # a second, give or take a rounding error of the clock's arithmetic


class Pacer:
    """Spaces calls evenly so that at most ``rate`` start in any second; thread-safe.

    A frequency-limit answer (600xx) halves the pace at once; it then creeps back to the
    target by 1% per call (about 70 calls to recover), the classic additive-ish recovery that
    keeps a client from hammering a service that just said "too fast".

    Slowing down is bounded: calls are never spaced wider than SLOWEST, unless the target
    itself is wider (a rate below 1/s is kept exactly, 600xx or not). The pause after a
    600xx is ten intervals, at most PAUSE (but never shorter than one target interval).

    The spacing is planned: each caller is given its slot before it sleeps. A process that
    stalls (a busy machine) wakes its sleepers late, together with the callers that come on
    time, and a 1-second window would catch more than ``rate`` calls. So a call also starts
    only once the call ``floor(rate)`` places back started at least a second ago, by the
    times the calls really started: never more than the budget in any second.

    Its waits wake on ``stop`` and raise Stopped; ``sleep`` replaces them in tests.
    """

    SLOWEST = 1.0  # seconds between calls at most when slowed, unless the target is slower
    PAUSE = 10.0  # seconds without calls after a 600xx at most (unless the target is slower)

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if not 0 < rate < math.inf:
            raise ValueError(f"rate must be a positive finite number, got {rate}")
        self.target = 1.0 / rate
        self.interval = self.target
        self._clock = clock
        self._stop = stop or threading.Event()
        self._sleep = sleep or self._wait_on_stop
        self._next = 0.0
        self._lock = threading.Lock()
        self._started: collections.deque[float] = collections.deque(maxlen=_window(rate))

    def interrupt_on(self, stop: threading.Event) -> None:
        """Wake the waits on ``stop`` from now on."""
        self._stop = stop

    @property
    def rate(self) -> float:
        """Calls per second at the current pace."""
        return 1.0 / self.interval

    @property
    def slowest(self) -> float:
        """The widest spacing a slow-down may reach: SLOWEST, or the target if it is wider."""
        return max(self.SLOWEST, self.target)

    def set_rate(self, rate: float) -> None:
        """Change the target (the run's budget, shared by its live processes)."""
        if not 0 < rate < math.inf:
            raise ValueError(f"rate must be a positive finite number, got {rate}")
        with self._lock:
            slowed = self.interval / self.target
            self.target = 1.0 / rate
            self.interval = min(max(self.target, self.target * slowed), self.slowest)
            # A smaller share starts a window of its own: the calls made at the old share kept
            # within the old one, and a peer takes the rest only after this process has lowered
            # its pace (etl.sync._join). Kept, they would stop this process for most of a second.
            kept = self._started if _window(rate) >= len(self._started) else ()
            self._started = collections.deque(kept, maxlen=_window(rate))

    def wait(self) -> None:
        """Block until this caller's slot comes up; Stopped if a stop is requested first."""
        if self._stop.is_set():
            raise Stopped("pacing: stop requested")
        with self._lock:
            now = self._clock()
            slot = max(self._next, now)
            self._next = slot + self.interval
            if self.interval > self.target:
                self.interval = max(self.target, self.interval * 0.99)
        if slot > now:
            self._sleep(slot - now)
        self._admit()

    def _admit(self) -> None:
        """Wait until this call keeps every 1-second window within the budget, and record its
        start."""
        while True:
            with self._lock:
                now = self._clock()
                started = self._started
                if len(started) < (started.maxlen or 1) or now - started[0] >= WINDOW:
                    started.append(now)
                    return
                delay = started[0] + 1.0 - now
            self._sleep(delay)

    def hold(self, seconds: float) -> None:
        """Start no call for ``seconds``."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)

    def slow_down(self) -> None:
        """The service said we call too often: halve the pace and pause a moment."""
        with self._lock:
            self.interval = min(self.interval * 2, self.slowest)
            pause = max(min(self.interval * 10, self.PAUSE), self.target)
            self._next = max(self._next, self._clock() + pause)

    def _wait_on_stop(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopped("pacing wait cut short: stop requested")


def _window(rate: float) -> int:
    """How many calls may start in any 1-second window at ``rate`` calls/s: floor(rate), at
    least one."""
    return max(1, math.floor(rate + 1e-9))
