"""Prometheus metrics of a ``sync`` or ``worker`` process, where monitoring already looks: a
textfile for node_exporter's textfile collector (written with an atomic rename) and/or pushes
to a Pushgateway (etl.pushgateway, the one HTTP client besides etl.tencent), every few
seconds and once at exit.

The figures come from the progress snapshots a sync hands its caller (this process's calls by
answer code, pages, items, changes) and from the database (the run's lists by status, its
reconciliation with the callbacks as `status` shows it, the job's last successful run), read
at each refresh. Nothing here can stop a sync: a failing
write or push is logged and tried again at the next refresh.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import default_handler
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from etl.config import Pushgateway
from etl.pushgateway import PUSH_TIMEOUT, Handler, Pusher
from etl.results import Progress
from etl.store import db, reconcile, runs
from etl.store.schema import sync_runs
from etl.tencent.codes import RATE_LIMIT_CODES

log = logging.getLogger(__name__)

DEFAULT_EVERY = 15.0  # seconds between refreshes: node_exporter and Prometheus scrape at 15 s


class Metrics:
    """The metrics of one process; ``on_progress`` feeds it, ``close`` writes the last ones."""

    def __init__(
        self,
        engine: Engine,
        job: str,
        *,
        textfile: Path | None = None,
        pushgateway: Pushgateway | None = None,
        every: float = DEFAULT_EVERY,
        push_handler: Handler = default_handler,
    ) -> None:
        self.engine, self.job = engine, job
        self.textfile, self.pushgateway, self.every = textfile, pushgateway, every
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.pusher = None
        if pushgateway is not None:
            self.pusher = Pusher(pushgateway, job, self.instance, handler=push_handler)
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.progress: Progress | None = None
        self.lists: dict[str, int] = {}
        self.reconciled: dict[str, Any] | None = None  # the run's (etl.store.reconcile.summary)
        self.last_success: float | None = None
        self.exit_code: int | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)

    def start(self) -> None:
        """Write the first figures now, then every ``every`` seconds."""
        self.refresh()
        self._thread.start()

    def on_progress(self, progress: Progress) -> None:
        """The sync's newest snapshot (called from its writer threads)."""
        self.progress = progress

    def close(self, exit_code: int) -> None:
        """Stop refreshing and write the final figures, with the process's exit code."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=PUSH_TIMEOUT * 2)
        self.exit_code = exit_code
        self.refresh()

    def _loop(self) -> None:
        while not self._stopped.wait(self.every):
            self.refresh()

    def refresh(self) -> None:
        """Read the database's figures, then write the textfile and push, each if configured."""
        self._read_database()
        if self.textfile is not None:
            try:
                write_to_textfile(str(self.textfile), self.registry)
            except OSError as exc:
                log.warning("metrics: cannot write %s: %s", self.textfile, exc)
        if self.pusher is not None:
            self.pusher.push(self.registry)  # a failure is logged, not raised

    def _read_database(self) -> None:
        progress = self.progress
        try:
            with self.engine.connect() as conn:
                if progress is not None:
                    self.lists = runs.counts(conn, progress.run_id)
                run = progress.run_id if progress is not None else _latest(conn, self.job)
                self.reconciled = None if run is None else reconcile.summary(conn, run)
                finished = conn.execute(
                    sa.select(sa.func.max(sync_runs.c.finished_at)).where(
                        sync_runs.c.job == self.job, sync_runs.c.status == "done"
                    )
                ).scalar()
        except Exception as exc:
            if not db.is_database_error(exc):
                raise
            log.debug("metrics: database figures not refreshed: %s", db.first_line(exc))
            return
        if isinstance(finished, datetime):
            if finished.tzinfo is None:  # SQLite keeps no zone; follow-etl writes UTC
                finished = finished.replace(tzinfo=UTC)
            self.last_success = finished.timestamp()


def _latest(conn: sa.Connection, job: str) -> int | None:
    """The job's newest run, before this process has one."""
    run = runs.latest_run(conn, job)
    return None if run is None else run.id


class _Collector(Collector):
    """The metric families of a Metrics' latest figures."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m, p = self.metrics, self.metrics.progress
        labels, values = ["job"], [m.job]
        if p is not None:
            yield from _progress_families(p, labels, values)
        if m.lists:
            lists = GaugeMetricFamily(
                "follow_etl_lists", "the run's lists by status", labels=[*labels, "status"]
            )
            for status in runs.STATUSES:
                lists.add_metric([*values, status], m.lists.get(status, 0))
            yield lists
        if m.reconciled is not None:
            yield from _reconciled_families(m.reconciled, labels, values)
        if m.last_success is not None:
            yield _gauge(
                "follow_etl_last_success_timestamp_seconds",
                "when the job's last run finished (Unix time)",
                labels,
                values,
                m.last_success,
            )
        yield _gauge(
            "follow_etl_last_refresh_timestamp_seconds",
            "when these figures were written (Unix time)",
            labels,
            values,
            time.time(),
        )
        if m.exit_code is not None:
            yield _gauge("follow_etl_exit_code", "the process's exit code (0: done)", labels,
                         values, m.exit_code)  # fmt: skip


def _progress_families(p: Progress, labels: list[str], values: list[str]) -> Iterator[Metric]:
    """The families read from a sync's progress snapshot: answers, calls, rows, the run."""
    calls = CounterMetricFamily(
        "follow_etl_api_answers",
        "follow API answers received by this process, by code (0 is OK; http_NNN, "
        "timeout, network, malformed otherwise)",
        labels=[*labels, "code"],
    )
    for code, count in sorted(p.answers.items()):
        calls.add_metric([*values, code], count)
    yield calls
    limited = sum(
        n
        for code, n in p.answers.items()
        if code == "http_429" or (code.isdigit() and int(code) in RATE_LIMIT_CODES)
    )
    yield from (
        _counter("follow_etl_api_calls", "follow API calls made", labels, values, p.calls),
        _counter("follow_etl_retries", "calls retried", labels, values, p.retries),
        _counter("follow_etl_rate_limited", "rate-limit answers", labels, values, limited),
        _counter(
            "follow_etl_malformed_answers",
            '"OK" answers that were not a page',
            labels,
            values,
            p.malformed,
        ),
        _counter("follow_etl_pages", "pages stored", labels, values, p.pages),
        _counter("follow_etl_items", "items stored", labels, values, p.items),
        _counter(
            "follow_etl_edges_added",
            "edges that appeared in lists with a baseline",
            labels,
            values,
            p.edges_added,
        ),
        _counter(
            "follow_etl_edges_removed",
            "edges marked removed",
            labels,
            values,
            p.edges_removed,
        ),
        _counter(
            "follow_etl_profile_versions_stored",
            "profile versions stored for the first time",
            labels,
            values,
            p.profiles,
        ),
        _counter(
            "follow_etl_quarantined_items",
            "items that could not be stored, kept in quarantined_items",
            labels,
            values,
            p.quarantined,
        ),
        _counter(
            "follow_etl_profile_conflicts",
            "profile versions seen again with other content",
            labels,
            values,
            p.conflicts,
        ),
        _gauge("follow_etl_run_id", "the run this process works on", labels, values, p.run_id),
        _gauge(
            "follow_etl_run_duration_seconds",
            "seconds this process has worked on the run",
            labels,
            values,
            p.elapsed,
        ),
        _gauge("follow_etl_workers", "live processes on the run", labels, values, p.workers),
    )


def _reconciled_families(
    live: dict[str, Any], labels: list[str], values: list[str]
) -> Iterator[Metric]:
    """The run's reconciliation with the callbacks (etl.store.reconcile), as the crawls of its
    completed lists found it: changes seen live, the drift, the live share."""
    yield _gauge(
        "follow_etl_reconciled_lists",
        "lists of the run whose complete crawl had callback changes or drift to reconcile",
        labels,
        values,
        live["lists"],
    )
    yield _gauge(
        "follow_etl_live_changes",
        "callback changes the run's complete crawls found already made (seen live)",
        labels,
        values,
        live["live"],
    )
    drift = GaugeMetricFamily(
        "follow_etl_drift_edges",
        "edges the run's complete crawls had to add or remove: changes the callbacks missed",
        labels=[*labels, "change"],
    )
    drift.add_metric([*values, "added"], live["missed_added"])
    drift.add_metric([*values, "removed"], live["missed_removed"])
    yield drift
    if live["live_share"] is not None:
        yield _gauge(
            "follow_etl_live_share",
            "share of the run's reconciled changes seen live: live / (live + drift)",
            labels,
            values,
            live["live_share"],
        )
    yield _gauge(
        "follow_etl_lists_touched_live",
        "lists callbacks changed since their last complete crawl (all jobs)",
        labels,
        values,
        live["touched"],
    )


def _counter(name: str, doc: str, labels: list[str], values: list[str], value: float) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    family.add_metric(values, value)
    return family


def _gauge(name: str, doc: str, labels: list[str], values: list[str], value: Any) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    family.add_metric(values, float(value))
    return family
