"""The use cases: ``sync`` (hold the job, resume or start its run, crawl it) and ``work``
(join the job's unfinished run from any machine). etl.crawl does the crawling, and its lister
(etl.crawl.lister) adds the run's lists, in committed chunks, alongside it.

Rows and the cursors that follow them commit together, a batch of pages per transaction, so a
process killed at any instant leaves the database consistent, and the next ``sync`` or
``worker`` continues from the last committed cursors. Replaying a batch is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import holds
from etl.crawl.lister import Lister
from etl.crawl.presence import present
from etl.crawl.session import Plan, Session
from etl.crawl.writer import Writer
from etl.errors import DatabaseError, Stopped, UsageError
from etl.results import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, Progress, SyncReport, SyncRequest
from etl.store import db, runs, workers
from etl.store import retention as prune
from etl.store.dialect import dialect_of
from etl.tencent.client import FollowClient

log = logging.getLogger(__name__)

JOIN_WAIT = 3.0  # heartbeats a joining worker waits at most for its peers to count it


def sync(
    engine: Engine,
    client: FollowClient,
    request: SyncRequest,
    *,
    clock: Callable[[], datetime] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
    on_run: Callable[[int], None] = lambda run_id: None,
    writer: type[Writer] = Writer,
    heartbeat_every: float | None = workers.HEARTBEAT,
) -> SyncReport:
    """Hold the job, resume its unfinished run (or start one) and crawl it as far as it goes.

    Raises JobBusy if another live ``sync`` holds the job (unless ``request.wait``), Stopped if
    ``stop`` is set while waiting for it. ``on_run`` hears the run's id as soon as it is open.
    The report says whether the run finished (``report.problem()``); FatalApiError and
    database errors propagate. Whatever happens, the run stays resumable. Rows are stamped
    with ``clock`` (default: the database's time). ``writer`` is the class of the crawl's
    writer lanes (etl.crawl.writer; a test passes one that watches them); ``heartbeat_every``
    the seconds between the process's beats (None: it never renews its row, as in a batch that
    outlasts the row's lifetime).
    """
    stop = stop or threading.Event()
    db_clock, clock = _clocks(engine, clock)
    with present(
        engine, request.job, "sync", db_clock, stop=stop, wait=request.wait, every=heartbeat_every
    ) as heartbeat:
        rate = request.rate or client.pacer.rate
        run_id, resumed = _open_run(engine, request, _options(request, rate), clock)
        on_run(run_id)
        if resumed:
            log.info("resuming run %d of job %r", run_id, request.job)
        report = SyncReport(run_id=run_id, job=request.job, resumed=resumed)
        plan = Plan(
            rate=rate,
            page_size=request.page_size,
            concurrency=request.concurrency,
            db_seconds=request.db_seconds,
            holds=request.holds,
            clock=clock,
            on_progress=on_progress,
            writer=writer,
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
                changed_first=request.changed_first,
            )

        Session(engine, client, heartbeat, plan, report).run(stop, lister)
        if request.keep_runs > 0 and report.problem() is None and not report.interrupted:
            _prune(engine, request.job, request.keep_runs, clock, stop)
        return report


def _clocks(
    engine: Engine, clock: Callable[[], datetime] | None
) -> tuple[workers.DbClock, Callable[[], datetime]]:
    """The database's clock (estimated here, re-measured at every heartbeat), and the clock
    rows are stamped with: ``clock``, or that one."""
    with engine.connect() as conn:
        db_clock = workers.DbClock(conn)
    return db_clock, clock or db_clock


def _options(request: SyncRequest, rate: float) -> dict[str, object]:
    """The run's stored settings: a worker joining it crawls by them."""
    return {
        "types": list(request.types),
        "page_size": request.page_size,
        "rate": rate,
        "concurrency": request.concurrency,
        "hold_min_edges": request.holds.min_edges,  # workers hold by the same rule
        "hold_share": request.holds.share,
    }


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
    if not dialect_of(engine).serves_workers:
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
    db_clock, clock = _clocks(engine, clock)
    with present(engine, job, "worker", db_clock, stop=stop) as heartbeat:
        peers = _join(engine, heartbeat, run.id, stop)
        report = SyncReport(run_id=run.id, job=job, resumed=True, worker=True)
        log.info("worker joining run %d of job %r (%d processes on it)", run.id, job, peers)
        options = run.options
        plan = Plan(
            rate=float(options.get("rate") or client.pacer.rate),
            page_size=int(options.get("page_size", 1000)),
            concurrency=stored_concurrency(options),
            db_seconds=db_seconds,
            holds=holds.Thresholds(
                int(options.get("hold_min_edges", holds.DEFAULT_MIN_EDGES)),
                float(options.get("hold_share", holds.DEFAULT_SHARE)),
            ),
            clock=clock,
            on_progress=on_progress,
        )
        Session(engine, client, heartbeat, plan, report).run(stop)
        return report


def _join(engine: Engine, heartbeat: workers.Heartbeat, run_id: int, stop: threading.Event) -> int:
    """Attach to the run and wait until its other processes have counted this one (they lower
    their share of the budget before this one starts calling); returns how many share it."""
    me = heartbeat.me
    with engine.begin() as conn:
        peers = workers.attach(conn, me, run_id)
        joined = workers.joined_at(conn, me)
    # Beat fast while joining: a worker joining at the same time waits for this one's beat.
    heartbeat.hurry()
    # Each peer has counted this one once it has heartbeat since: about one heartbeat (a peer
    # that is joining too beats faster); at most JOIN_WAIT of them.
    deadline = time.monotonic() + workers.HEARTBEAT * JOIN_WAIT
    while peers > 1 and not _caught_up(engine, me, joined):
        if time.monotonic() > deadline or stop.wait(0.1):
            break
    return peers


def _caught_up(engine: Engine, me: workers.Presence, since: datetime) -> bool:
    with engine.connect() as conn:
        return workers.peers_caught_up(conn, me, since)


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


def _open_run(
    engine: Engine, request: SyncRequest, options: dict[str, object], clock: Callable[[], datetime]
) -> tuple[int, bool]:
    """Resume or start the job's run, in one short transaction: (run id, resumed). Its lists
    are added afterwards, alongside the crawl (etl.crawl.lister)."""
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
