"""One process's crawl of a run, around etl.crawl's Crawl: the run's calls-per-second budget
shared through the heartbeat, progress snapshots, the sync's lister alongside, a
stop request relayed to the crawl and to every wait of the client, and at the end the run's
counters stored (closing the run if nothing is left) and the report filled in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import holds
from etl.crawl.coordinator import Crawl
from etl.crawl.lister import Lister
from etl.crawl.messages import Tally
from etl.crawl.presence import STOPPING_DB_SECONDS
from etl.crawl.progress import Progresser
from etl.crawl.writer import Writer
from etl.results import Progress, SyncReport
from etl.store import db, runs, workers
from etl.tencent.client import FollowClient

log = logging.getLogger(__name__)

SHARED_MARGIN = 0.98  # of its share a process uses when several share the run's budget


@dataclass(frozen=True)
class Plan:
    """How this process crawls a run: the run's budget and settings, the clock its rows are
    stamped with, who hears its progress, and the writer lanes it builds (etl.crawl.writer)."""

    rate: float  # calls/s for the whole run, shared among its live processes
    page_size: int
    concurrency: int
    db_seconds: float  # how long to wait for a lost database
    holds: holds.Thresholds
    clock: Callable[[], datetime]
    on_progress: Callable[[Progress], None] | None = None
    writer: type[Writer] = Writer


class Session:
    """One process's crawl of one run, its report filled in and its counters stored."""

    def __init__(
        self,
        engine: Engine,
        client: FollowClient,
        heartbeat: workers.Heartbeat,
        plan: Plan,
        report: SyncReport,
    ) -> None:
        self.engine, self.client, self.heartbeat = engine, client, heartbeat
        self.plan, self.report = plan, report

    def run(
        self,
        stop: threading.Event,
        make_lister: Callable[[threading.Event], Lister] | None = None,
    ) -> None:
        """Crawl the run, its budget shared through the heartbeat; fill in and store the report.

        The sync's ``make_lister`` adds the run's lists in a thread alongside the crawl, which
        does not end before it is done. A worker has none: it goes on while the run is not yet
        listed and its ``sync`` is alive (that sync adds the rest), and ends once no sync holds
        the job (the next one finishes the listing)."""
        report, client, clock = self.report, self.client, self.plan.clock
        started = time.monotonic()
        before = client.counters()
        crawl_stop = threading.Event()
        lister = make_lister(crawl_stop) if make_lister else None
        crawl, progress = self._prepare(before, crawl_stop, lister)
        # A stop request (signal) reaches the crawl and every wait of the client; the crawl may
        # also stop by itself (a fatal answer, an API that keeps failing).
        relay = threading.Thread(target=_relay, args=(stop, crawl_stop), daemon=True)
        relay.start()
        client.interrupt_on(crawl_stop)
        try:
            if lister is not None:
                lister.start()
            crawl.run()
            if lister is not None:
                _finish(lister, crawl_stop)
        except BaseException:
            _fill(report, crawl.tally, client, before, started)
            report.interrupted = stop.is_set()
            try:
                _close(self.engine, report, clock, stopping=True)
            except Exception as exc:  # noqa: BLE001 - the first error is the one to report
                log.error("could not store the run's counters: %s", db.first_line(exc))
            raise
        finally:
            crawl_stop.set()
            if lister is not None:
                lister.join()
            client.interrupt_on(None)
        _fill(report, crawl.tally, client, before, started)
        report.interrupted = stop.is_set()
        _close(self.engine, report, clock, stopping=report.interrupted)
        progress(crawl.tally, final=True)

    def _prepare(
        self, before: dict[str, int], crawl_stop: threading.Event, lister: Lister | None
    ) -> tuple[Crawl, Progresser]:
        """Attach to the run, take this process's share of its budget, build the crawl, and let
        the heartbeat report the crawl's counters and hear of peers and of the run closed."""
        engine, client, plan, report = self.engine, self.client, self.plan, self.report
        me = self.heartbeat.me
        with engine.begin() as conn:
            peers = workers.attach(conn, me, report.run_id)
        share = _Share(client, plan.rate)
        share(peers)
        listed: Callable[[], bool]
        if lister is not None:
            listed = lister.done.is_set
        else:
            listed = _Orphan(engine, report.run_id, me.job, crawl_stop, plan.db_seconds)
        progress = Progresser(engine, report, client, before, plan.on_progress)
        progress.peers = peers
        crawl = Crawl(
            engine,
            client,
            me,
            report.run_id,
            page_size=plan.page_size,
            concurrency=plan.concurrency,
            clock=plan.clock,
            stop=crawl_stop,
            on_batch=progress,
            db_seconds=plan.db_seconds,
            thresholds=plan.holds,
            listed=listed,
            writer=plan.writer,
        )

        def counters() -> dict[str, int]:
            return {
                "calls": client.calls - before["calls"],
                "pages": crawl.tally.pages,
                "items": crawl.tally.items,
            }

        def on_share(n: int) -> None:
            share(n)
            progress.peers = n

        def on_closed(status: str) -> None:
            if not crawl_stop.is_set():
                log.warning(
                    "run %d of job %r is %s: another process closed it; stopping",
                    report.run_id,
                    report.job,
                    status,
                )
            crawl_stop.set()

        self.heartbeat.counters, self.heartbeat.on_share = counters, on_share
        self.heartbeat.on_closed = on_closed
        return crawl, progress


def _finish(lister: Lister, crawl_stop: threading.Event) -> None:
    """Join the lister after the crawl; raise its error (a bad accounts file, the database
    gone beyond its retry window), which stopped the crawl."""
    crawl_stop.set()  # the crawl is over: so is whatever the lister still does
    lister.join()
    if lister.error is not None:
        raise lister.error


class _Orphan:
    """A worker's ``listed``: true once the run is marked listed, or once no live ``sync``
    holds its job (nobody is adding its lists now: the next sync adds the rest)."""

    def __init__(
        self, engine: Engine, run_id: int, job: str, stop: threading.Event, db_seconds: float
    ) -> None:
        self.engine, self.run_id, self.job = engine, run_id, job
        self.stop, self.db_seconds = stop, db_seconds

    def __call__(self) -> bool:
        def look(conn: sa.Connection) -> bool:
            return runs.is_listed(conn, self.run_id) or workers.holder(conn, self.job) is None

        return db.retrying(
            self.engine, look, what="looking at the run", stop=self.stop, seconds=self.db_seconds
        )


def _relay(source: threading.Event, target: threading.Event) -> None:
    while not target.is_set():
        if source.wait(0.2):
            target.set()
            return


class _Share:
    """Sets the client's pace to the run's budget divided among its live processes."""

    def __init__(self, client: FollowClient, rate: float) -> None:
        self.client, self.rate, self.peers = client, rate, 0

    def __call__(self, peers: int) -> None:
        peers = max(1, peers)
        if peers != self.peers:
            self.peers = peers
            # Each process spaces its own calls; their phases drift, so a 1-second window can
            # catch one extra call of each. Sharing processes keep 2% back to absorb that.
            self.client.pacer.set_rate(self.rate / peers * (SHARED_MARGIN if peers > 1 else 1))
            log.debug(
                "pacing at %.1f calls/s (%d processes share %.1f)",
                self.rate / peers,
                peers,
                self.rate,
            )


def _fill(
    report: SyncReport, tally: Tally, client: FollowClient, before: dict[str, int], started: float
) -> None:
    with tally.lock:
        report.pages, report.items = tally.pages, tally.items
        report.edges_removed, report.events = tally.edges_removed, tally.events
        report.quarantined, report.conflicts = tally.quarantined, tally.conflicts
        report.profiles = tally.profiles
        report.missing_lists = tally.missing.count
        report.missing_accounts = list(tally.missing.first)
        report.failure_count = tally.failures.count
        report.failures = list(tally.failures.first)
    now = client.counters()
    report.requests = now["calls"] - before["calls"]
    report.retries = now["retries"] - before["retries"]
    report.malformed = now["malformed"] - before["malformed"]
    report.seconds = time.monotonic() - started


def _close(
    engine: Engine, report: SyncReport, clock: Callable[[], datetime], *, stopping: bool
) -> None:
    """Store the run's counters (done if nothing is left) and put the list counts in the report."""

    def close(conn: sa.Connection) -> None:
        status = runs.status_of(conn, report.run_id)
        if status != "running":  # closed by another process: close_run stores nothing over it
            report.closed_by_other = status
        # The counters say whether the run is finished (once every list is in); storing them
        # closes it if so.
        report.listed = runs.is_listed(conn, report.run_id)
        finished = report.listed and runs.counts(conn, report.run_id)["open"] == 0
        report.lists = runs.close_run(
            conn,
            report.run_id,
            finished=finished,
            requests=report.requests,
            edges_removed=report.edges_removed,
            now=clock(),
        )

    seconds = STOPPING_DB_SECONDS if stopping else db.RECONNECT_SECONDS
    db.retrying(engine, close, what="storing the run's counters", seconds=seconds)
