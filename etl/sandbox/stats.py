"""Thread-safe request counters of the sandbox, for tests and benchmarks to assert on."""

from __future__ import annotations

import threading
import time
from collections import Counter


class SandboxStats:
    """Counters of API answers plus follow_get arrival times (for peak-rate checks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter and forget the request timestamps."""
        with self._lock:
            self._requests = 0
            self._by_route: Counter[str] = Counter()
            self._by_code: Counter[str] = Counter()
            self._by_fault: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._items_served = 0
            self._list_calls: Counter[str] = Counter()
            self._received: list[float] = []
            self._accepted: list[float] = []
            self._first_follow_get: float | None = None  # wall clock (time.time())

    def received(self, now: float) -> None:
        """A follow_get request arrived (whatever its fate)."""
        with self._lock:
            self._received.append(now)
            if self._first_follow_get is None:
                self._first_follow_get = time.time()

    def accepted(self, now: float) -> None:
        """A follow_get request got past the rate limit."""
        with self._lock:
            self._accepted.append(now)

    def answered(self, route: str, status: int, code: int | None, fault: str | None) -> None:
        """Count one answer by route, HTTP status, ErrorCode and injected fault."""
        with self._lock:
            self._requests += 1
            self._by_route[route] += 1
            self._by_status[str(status)] += 1
            if code is not None:
                self._by_code[str(code)] += 1
            if fault is not None:
                self._by_fault[fault] += 1

    def served(self, items: int, list_key: str | None) -> None:
        """A successful answer delivered ``items`` items of list ``account/type``."""
        with self._lock:
            self._items_served += items
            if list_key is not None:
                self._list_calls[list_key] += 1

    def snapshot(self) -> dict[str, object]:
        """All counters as plain JSON-ready data."""
        with self._lock:
            snapshot: dict[str, object] = {
                "requests": self._requests,
                "by_route": dict(self._by_route),
                "by_error_code": dict(self._by_code),
                "by_fault": dict(self._by_fault),
                "by_http_status": dict(self._by_status),
                "items_served": self._items_served,
                "follow_get_ok": dict(self._list_calls),
            }
        snapshot["max_calls_in_window"] = self.max_calls_in_window(1.0)
        snapshot["max_accepted_in_window"] = self.max_calls_in_window(1.0, accepted_only=True)
        return snapshot

    def counts(self) -> dict[str, object]:
        """The cheap counters only (no per-list map, no window scan): what a benchmark polls
        while a crawl of millions of lists runs. ``first_follow_get`` is the wall-clock time
        (Unix seconds) the first follow_get arrived since the last reset, or None."""
        with self._lock:
            return {
                "requests": self._requests,
                "by_route": dict(self._by_route),
                "items_served": self._items_served,
                "first_follow_get": self._first_follow_get,
            }

    def max_calls_in_window(self, window: float = 1.0, *, accepted_only: bool = False) -> int:
        """Most follow_get requests received (or only rate-accepted ones) in any window."""
        with self._lock:
            stamps = sorted(self._accepted if accepted_only else self._received)
        best, lo = 0, 0
        for hi, stamp in enumerate(stamps):
            while stamp - stamps[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best
