"""The sandbox's call-rate limit: at most ``rate`` accepted calls in any one second (60007)."""

from __future__ import annotations

import threading
from collections import deque

from etl.sandbox.response import BadRequest


class RateLimit:
    """A sliding one-second window of accepted calls; no limit when ``rate`` is None."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._lock = threading.Lock()
        self._window: deque[float] = deque()

    def check(self, now: float) -> None:
        """Count a call at ``now``, or raise BadRequest 60007 if the window is full."""
        limit = self._rate
        if limit is None:
            return
        with self._lock:
            window = self._window
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= limit:
                raise BadRequest(60007, "call frequency over the limit")
            window.append(now)
