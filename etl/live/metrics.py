"""The listener's Prometheus metrics, in a CollectorRegistry of its own (``GET /metrics``):
what arrived, what was refused and why, what the batches did to the graph, and how long a
commit and an acknowledgement took. The app and the writer thread update them (prometheus_client
is thread-safe)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from etl.live.callbacks import COMMANDS, REASONS
from etl.store.live import Applied

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNACKNOWLEDGED = ("timeout", "busy", "error")  # 503 after the ack timeout, 503 queue full, 500


class ListenMetrics:
    """The metrics of one listener process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "follow_etl_callbacks_received",
            "callbacks POSTed to the callback path, by CallbackCommand (query; other: neither)",
            ["command"],
            registry=r,
        )
        self.rejected = Counter(
            "follow_etl_callbacks_rejected",
            "requests refused with a 4xx, by reason",
            ["reason"],
            registry=r,
        )
        self.acknowledged = Counter(
            "follow_etl_callbacks_acknowledged",
            "callbacks answered 200 (their changes committed)",
            registry=r,
        )
        self.unacknowledged = Counter(
            "follow_etl_callbacks_unacknowledged",
            "checked callbacks not acknowledged: timeout (503, not committed within the ack "
            "timeout), busy (503, queue full), error (500, the batch failed)",
            ["why"],
            registry=r,
        )
        self.changes = Counter(
            "follow_etl_live_changes",
            "changes committed: applied (they decided their direction) or stale "
            "(duplicates, older than one applied)",
            ["outcome"],
            registry=r,
        )
        self.untracked = Counter(
            "follow_etl_live_untracked",
            "list updates skipped: the list has no baseline (not kept)",
            registry=r,
        )
        self.added = Counter(
            "follow_etl_live_edges_added", "edges made current by callbacks", registry=r
        )
        self.removed = Counter(
            "follow_etl_live_edges_removed", "edges ended by callbacks", registry=r
        )
        self.batches = Counter("follow_etl_live_batches", "batches committed", registry=r)
        self.retries = Counter(
            "follow_etl_live_batch_retries",
            "batch attempts that failed on a transient database error and were retried",
            registry=r,
        )
        self.commit_seconds = Histogram(
            "follow_etl_live_batch_commit_seconds",
            "one batch: its transaction, from BEGIN to COMMIT",
            buckets=SECONDS,
            registry=r,
        )
        self.ack_seconds = Histogram(
            "follow_etl_live_ack_seconds",
            "an acknowledged callback: from its changes queued to their commit",
            buckets=SECONDS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "follow_etl_live_queue_depth", "changes waiting for the writer", registry=r
        )
        self._labels()

    def _labels(self) -> None:
        """Every label value at 0 from the start, so a rate() sees the first increase."""
        for command in (*COMMANDS, "other"):
            self.received.labels(command)
        for reason in REASONS:
            self.rejected.labels(reason)
        for why in UNACKNOWLEDGED:
            self.unacknowledged.labels(why)
        for outcome in ("applied", "stale"):
            self.changes.labels(outcome)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """The queue depth gauge reads ``depth()`` at each scrape."""
        self.queue_depth.set_function(lambda: float(depth()))

    def committed(self, applied: Applied, seconds: float) -> None:
        """One batch committed in ``seconds`` with this outcome."""
        self.batches.inc()
        self.commit_seconds.observe(seconds)
        self.changes.labels("applied").inc(applied.applied)
        self.changes.labels("stale").inc(applied.stale)
        self.untracked.inc(applied.untracked)
        self.added.inc(applied.added)
        self.removed.inc(applied.removed)

    def total(self, name: str) -> int:
        """A counter's value, summed over its labels (``name`` without ``_total``)."""
        return sum(
            int(sample.value)
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == f"{name}_total"
        )

    def exposition(self) -> bytes:
        """The Prometheus text of every metric."""
        return generate_latest(self.registry)
