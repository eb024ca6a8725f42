"""The use cases: ``sync`` (hold the job, resume or start its run, crawl it) and ``work``
(join the job's unfinished run from any machine). etl.crawl does the crawling; etl.startup
adds the run's lists, in committed chunks, alongside it.

Rows and the cursors that follow them commit together, a batch of pages per transaction, so a
process killed at any instant leaves the database consistent, and the next ``sync`` or
``worker`` continues from the last committed cursors. Replaying a batch is harmless.
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
from etl.crawl import Crawl, Rate, Tally
from etl.crawl.lister import Lister
from etl.errors import DatabaseError, JobBusy, Stopped, UsageError
from etl.results import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, Progress, SyncReport, SyncRequest
from etl.store import db, joblock, leases, runs, workers
from etl.store import retention as prune
from etl.tencent.client import FollowClient

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds between progress snapshots
JOIN_WAIT = 3.0  # heartbeats a joining worker waits at most for its peers to count it
SHARED_MARGIN = 0.98  # of its share a process uses when several share the run's budget
COUNTS_EVERY = 5.0  # seconds between reads of the run's counters (other workers move them)


def stored_concurrency(options: dict[str, object]) -> int:
    """A run's stored concurrency, kept within 1..MAX_CONCURRENCY (a run stored by an older
    version may hold more): a worker takes the bound, with a warning, rather than fail."""
    raw = options.get("concurrency", DEFAULT_CONCURRENCY)
    value = int(raw) if isinstance(raw, int | float | str) else DEFAULT_CONCURRENCY
    bounded = min(max(value, 1), MAX_CONCURRENCY)
    if bounded != value:
        log.warning(
            "the run's concurrency %d is out of 1..%d: using %d", value, MAX_CONCURRENCY, bounded
        )
    return bounded


def sync(
    engine: Engine,
    client: FollowClient,
    request: SyncRequest,
    *,
    clock: Callable[[], datetime] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
    on_run: Callable[[int], None] = lambda run_id: None,
) -> SyncReport:
    """Hold the job, resume its unfinished run (or start one) and crawl it as far as it goes.

    Raises JobBusy if another live ``sync`` holds the job (unless ``request.wait``), Stopped if
    ``stop`` is set while waiting for it. ``on_run`` hears the run's id as soon as it is open.
    The report says whether the run finished (``report.problem()``); FatalApiError and
    database errors propagate. Whatever happens, the run stays resumable. Rows are stamped
    with ``clock`` (default: the database's time).
    """
    stop = stop or threading.Event()
    with engine.connect() as conn:
        db_clock = workers.DbClock(conn)
    clock = clock or db_clock
    me = _hold(engine, request, db_clock, stop)
    # The heartbeat runs from here on: a run that takes minutes to create keeps the job.
    heartbeat = workers.Heartbeat(engine, me)
    heartbeat.start()
    try:
        rate = request.rate or client.pacer.rate
        options = {
            "types": list(request.types),
            "page_size": request.page_size,
            "rate": rate,
            "concurrency": request.concurrency,
            "hold_min_edges": request.holds.min_edges,  # workers hold by the same rule
            "hold_share": request.holds.share,
        }
        run_id, resumed = _open_run(engine, request, options, clock)
        on_run(run_id)
        if resumed:
            log.info("resuming run %d of job %r", run_id, request.job)
        report = SyncReport(run_id=run_id, job=request.job, resumed=resumed)
        plan = _Plan(
            rate, request.page_size, request.concurrency, request.db_seconds, request.holds
        )
        lists = ((account, t) for account in request.accounts for t in request.types)

        def lister(crawl_stop: threading.Event) -> Lister:
            return Lister(
                engine,
                client,
                run_id,
                lists,
                clock=clock,
                stop=crawl_stop,
                chunk=request.list_chunk,
                concurrency=request.concurrency,
                db_seconds=request.db_seconds,
            )

        _crawl(engine, client, me, heartbeat, report, plan, clock, on_progress, stop, lister)
        if request.keep_runs > 0 and report.problem() is None and not report.interrupted:
            _prune(engine, request.job, request.keep_runs, clock, stop)
        return report
    finally:
        heartbeat.stop()
        _leave(engine, me)


def _prune(
    engine: Engine,
    job: str,
    keep_runs: int,
    clock: Callable[[], datetime],
    stop: threading.Event,
) -> None:
    """The automatic retention after a clean finish (still holding the job). A failure or a
    stop costs a warning, not the run: its data is stored, and the next sync prunes again."""
    try:
        prune.prune(engine, job, keep_runs, clock(), stop=stop)
    except Stopped:
        log.warning("stopped while pruning the job's old checkpoints; the next sync goes on")
    except Exception as exc:
        if not db.is_database_error(exc):
            raise
        log.warning("could not prune the job's old checkpoints: %s", db.first_line(exc))


def work(
    engine: Engine,
    client: FollowClient,
    job: str,
    *,
    clock: Callable[[], datetime] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
    db_seconds: float = db.RECONNECT_SECONDS,
    on_run: Callable[[int], None] = lambda run_id: None,
) -> SyncReport | None:
    """Join the job's unfinished run with its own settings; None if it has none."""
    if engine.dialect.name != "postgresql":
        raise UsageError(
            "workers need PostgreSQL: the embedded SQLite database serves one process; "
            "run `sync` alone"
        )
    stop = stop or threading.Event()
    with engine.connect() as conn:
        run = runs.unfinished_run(conn, job)
    if run is None:
        return None
    on_run(run.id)
    with engine.connect() as conn:
        db_clock = workers.DbClock(conn)
    clock = clock or db_clock
    with engine.begin() as conn:
        me = workers.register(conn, job, "worker", db_clock)
    heartbeat = workers.Heartbeat(engine, me)
    try:
        with engine.begin() as conn:
            peers = workers.attach(conn, me, run.id)
            joined = workers.joined_at(conn, me)
        heartbeat.start()
        options = run.options
        rate = float(options.get("rate") or client.pacer.rate)
        # The others must lower their share of the budget before this one starts calling: wait
        # until each has heartbeat since (about one heartbeat; at most JOIN_WAIT of them).
        deadline = time.monotonic() + workers.HEARTBEAT * JOIN_WAIT
        while peers > 1 and not _caught_up(engine, me, joined):
            if time.monotonic() > deadline or stop.wait(0.1):
                break
        report = SyncReport(run_id=run.id, job=job, resumed=True, worker=True)
        log.info("worker joining run %d of job %r (%d processes on it)", run.id, job, peers)
        plan = _Plan(
            rate,
            int(options.get("page_size", 1000)),
            stored_concurrency(options),
            db_seconds,
            holds.Thresholds(
                int(options.get("hold_min_edges", holds.DEFAULT_MIN_EDGES)),
                float(options.get("hold_share", holds.DEFAULT_SHARE)),
            ),
        )
        _crawl(engine, client, me, heartbeat, report, plan, clock, on_progress, stop)
        return report
    finally:
        heartbeat.stop()
        _leave(engine, me)


@dataclass(frozen=True)
class _Plan:
    """How a process crawls a run: the run's budget and its settings."""

    rate: float
    page_size: int
    concurrency: int
    db_seconds: float
    holds: holds.Thresholds


def _caught_up(engine: Engine, me: workers.Presence, since: datetime) -> bool:
    with engine.connect() as conn:
        return workers.peers_caught_up(conn, me, since)


def _hold(
    engine: Engine, request: SyncRequest, clock: workers.DbClock, stop: threading.Event
) -> workers.Presence:
    """Register as the job's ``sync``; with ``wait``, until the holder is gone (Stopped if
    ``stop`` is set first). On a SQLite file the job's flock is taken first and kept in the
    Presence until ``_leave`` (etl.joblock): a live holder is never taken for dead there."""
    lock = joblock.for_job(engine, request.job)
    announced = False
    try:
        while True:
            try:
                if lock is not None:
                    lock.acquire()
                with engine.begin() as conn:
                    me = workers.register(conn, request.job, "sync", clock)
                me.lock = lock
                return me
            except JobBusy as busy:
                if not request.wait:
                    raise
                if not announced:
                    log.info("%s; waiting", str(busy).split(";")[0])
                    announced = True
            if stop.wait(workers.HEARTBEAT):
                raise Stopped(f"stopped while waiting for job {request.job!r}")
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _open_run(
    engine: Engine, request: SyncRequest, options: dict[str, object], clock: Callable[[], datetime]
) -> tuple[int, bool]:
    """Resume or start the job's run, in one short transaction: (run id, resumed). Its lists
    are added afterwards, alongside the crawl (etl.startup)."""
    now = clock()
    try:
        with engine.begin() as conn:
            run = runs.unfinished_run(conn, request.job)
            if run is not None and request.restart:
                log.info("abandoning unfinished run %d of job %r", run.id, request.job)
                runs.abandon_run(conn, run.id, now)
                run = None
            if run is None:
                run_id = runs.start_run(conn, request.job, options, now)
            else:
                run_id = run.id
                runs.set_options(conn, run_id, options)
    except sa.exc.IntegrityError:
        raise DatabaseError(
            f"another sync of job {request.job!r} started at the same moment; try again"
        ) from None
    return run_id, run is not None


def _crawl(
    engine: Engine,
    client: FollowClient,
    me: workers.Presence,
    heartbeat: workers.Heartbeat,
    report: SyncReport,
    plan: _Plan,
    clock: Callable[[], datetime],
    on_progress: Callable[[Progress], None] | None,
    stop: threading.Event,
    make_lister: Callable[[threading.Event], Lister] | None = None,
) -> None:
    """Crawl the run, its budget shared through the heartbeat; fill in and store the report.

    The sync's ``make_lister`` adds the run's lists in a thread alongside the crawl, which
    does not end before it is done. A worker has none: it goes on while the run is not yet
    listed and its ``sync`` is alive (that sync adds the rest), and ends once no sync holds
    the job (the next one finishes the listing)."""
    started = time.monotonic()
    before = client.counters()
    with engine.begin() as conn:
        peers = workers.attach(conn, me, report.run_id)
    share = _Share(client, plan.rate)
    share(peers)
    crawl_stop = threading.Event()
    lister = make_lister(crawl_stop) if make_lister else None
    listed: Callable[[], bool]
    if lister is not None:
        listed = lister.done.is_set
    else:
        listed = _Orphan(engine, report.run_id, me.job, crawl_stop, plan.db_seconds)
    progress = _Progresser(engine, report, client, before, on_progress)
    progress.peers = peers
    crawl = Crawl(
        engine,
        client,
        me,
        report.run_id,
        page_size=plan.page_size,
        concurrency=plan.concurrency,
        clock=clock,
        stop=crawl_stop,
        on_batch=progress,
        db_seconds=plan.db_seconds,
        thresholds=plan.holds,
        listed=listed,
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

    heartbeat.counters, heartbeat.on_share = counters, on_share
    heartbeat.on_closed = on_closed
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
            _close(engine, report, clock, stopping=True)
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
    _close(engine, report, clock, stopping=report.interrupted)
    progress(crawl.tally, final=True)


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


class _Progresser:
    """Turns batch tallies into Progress snapshots, at most every PROGRESS_EVERY seconds."""

    def __init__(
        self,
        engine: Engine,
        report: SyncReport,
        client: FollowClient,
        before: dict[str, int],
        sink: Callable[[Progress], None] | None,
    ) -> None:
        self.engine, self.report, self.client, self.sink = engine, report, client, sink
        self.calls_before, self.retries_before = before["calls"], before["retries"]
        self.malformed_before = before["malformed"]
        self.started = time.monotonic()
        self.next = 0.0
        self.next_count = 0.0
        self.total = self.settled_before = 0
        self.settled_base = 0  # this process's settled lists at the last recount
        self.rate = Rate()
        self.settle_rate = Rate(window=30.0)
        self.peers = 1

    def __call__(self, tally: Tally, final: bool = False) -> None:
        if self.sink is None:
            return
        now = time.monotonic()
        if now < self.next and not final:
            return
        self.next = now + PROGRESS_EVERY
        if now >= self.next_count or final:
            self.next_count = now + COUNTS_EVERY
            try:
                with self.engine.connect() as conn:
                    counts = runs.counts(conn, self.report.run_id)  # a few counter rows
            except Exception as exc:
                if not db.is_database_error(exc):
                    raise
                log.debug("progress: could not read the run's counters: %s", db.first_line(exc))
            else:
                self.total = counts["total"]
                self.settled_before = counts["total"] - counts["open"]
                self.settled_base = tally.settled
        settled = min(self.total, self.settled_before + tally.settled - self.settled_base)
        calls = self.client.calls - self.calls_before
        per_list = self.settle_rate.add(now, settled)
        eta = (self.total - settled) / per_list if per_list > 0 else None
        self.sink(
            Progress(
                run_id=self.report.run_id,
                job=self.report.job,
                lists_total=self.total,
                lists_settled=settled,
                pages=tally.pages,
                items=tally.items,
                calls=calls,
                retries=self.client.retries - self.retries_before,
                elapsed=now - self.started,
                calls_per_second=self.rate.add(now, calls),
                eta_seconds=0.0 if final else eta,
                workers=self.peers,
                final=final,
                edges_added=tally.events - tally.edges_removed,
                edges_removed=tally.edges_removed,
                quarantined=tally.quarantined,
                conflicts=tally.conflicts,
                profiles=tally.profiles,
                malformed=self.client.malformed - self.malformed_before,
                answers=self.client.answered(),
            )
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


STOPPING_DB_SECONDS = 3.0  # a stopping process gives a lost database this long, not minutes


def _leave(engine: Engine, me: workers.Presence) -> None:
    """Give back this process's leases and its hold on the job."""

    def leave(conn: sa.Connection) -> None:
        if me.run_id is not None:
            leases.release(conn, me.run_id, me.id)
        workers.leave(conn, me)

    try:
        db.retrying(engine, leave, what="releasing leases", seconds=STOPPING_DB_SECONDS)
    except Exception as exc:
        if not db.is_database_error(exc):
            raise
        log.error(
            "could not release this process's leases: %s (they expire in %.0f s)",
            db.first_line(exc),
            workers.TTL,
        )
    finally:
        if me.lock is not None:  # last: the row is gone before the next holder may start
            me.lock.release()


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
