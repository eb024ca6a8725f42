"""The use case: crawl the lists of a job's run and load them, one transaction per page.

Each page's rows and the cursor that follows them commit together, so a process killed at any
instant leaves the database consistent, and the next ``sync`` continues from the last
committed cursor. Replaying the page in flight is harmless: every write is an upsert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import checkpoint, extract, load, transform
from etl.client import FollowClient
from etl.errors import (
    AccountNotFound,
    DatabaseError,
    FatalApiError,
    RequestRejected,
    RunIncomplete,
    TransientApiError,
)

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3  # lists failing in a row: the API is down, stop burning the budget
PROGRESS_EVERY = 5.0  # seconds between progress log lines


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class SyncRequest:
    """What to crawl and how."""

    job: str
    accounts: Sequence[str]
    types: tuple[int, ...] = (1, 2, 3)
    page_size: int = 1000
    restart: bool = False


@dataclass
class SyncReport:
    """What a sync did, for the CLI to print."""

    run_id: int
    job: str
    resumed: bool
    lists: dict[str, int] = field(default_factory=dict)
    pages: int = 0  # stored by this process
    items: int = 0  # stored by this process
    requests: int = 0
    retries: int = 0
    edges_removed: int = 0
    missing_accounts: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def problem(self) -> RunIncomplete | None:
        """Why this sync does not count as a clean finish (exit 6), or None."""
        lists, where = self.lists, f"run {self.run_id} of job {self.job!r}"
        if not self.finished:
            return RunIncomplete(
                f"{where} stopped with {lists['open']} of {lists['total']} lists left; "
                "run `sync` again to resume it"
            )
        if lists["failed"]:
            return RunIncomplete(
                f"{where} ended with {lists['failed']} of {lists['total']} lists given up "
                f"(see `status --job {self.job}`); the next `sync` starts a new run"
            )
        return None

    @property
    def finished(self) -> bool:
        """True when no list of the run is left to crawl (done, skipped or given up)."""
        return self.lists.get("open", 1) == 0


class _Crawl:
    """One process's pass over the open lists of a run."""

    def __init__(
        self,
        engine: Engine,
        client: FollowClient,
        report: SyncReport,
        page_size: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.conn: sa.Connection  # open while run() runs
        self.client = client
        self.report = report
        self.page_size = page_size
        self.clock = clock
        self.calls_at_start = client.calls
        self.started = time.monotonic()
        self.next_progress = self.started + PROGRESS_EVERY
        self.lists_done = 0

    def run(self) -> None:
        """Crawl every open list; stop early on a fatal error or an API that keeps failing."""
        # One connection for all the page transactions: no pool checkout and ping per page.
        with self.engine.connect() as self.conn:
            self._run()

    def _run(self) -> None:
        consecutive = 0
        for state in checkpoint.open_lists(self.engine, self.report.run_id):
            label = f"{state.account}/{transform.TYPE_NAMES[state.follow_type]}"
            try:
                self.crawl(state)
                consecutive = 0
            except AccountNotFound:
                self.skip_missing(state)
                consecutive = 0
            except RequestRejected as exc:
                # The same request would be rejected again: give the list up, keep going.
                self.settle(state, "failed", str(exc), give_up=True)
                self.report.failures.append(str(exc))
                log.error("%s: the service rejects this list, giving it up: %s", label, exc)
            except TransientApiError as exc:
                self.settle(state, "failed", str(exc))
                self.report.failures.append(str(exc))
                log.error("%s: failed after retries, the next sync retries it: %s", label, exc)
                consecutive += 1
                if consecutive >= MAX_CONSECUTIVE_FAILURES:
                    log.error("%d lists failed in a row: stopping the run", consecutive)
                    return
            except FatalApiError as exc:
                # Not the list's fault (credentials, app): note why, count no failure.
                with self.transaction() as conn:
                    checkpoint.note_error(
                        conn, self.report.run_id, state.account, state.follow_type, str(exc)
                    )
                raise
            self.lists_done += 1
            self.progress()

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A transaction on the crawl's connection; commits on leaving the block."""
        with self.conn.begin():
            yield self.conn

    def crawl(self, state: checkpoint.ListState) -> None:
        """Store every page of one list from its cursor on, each page with its cursor."""
        run_id, account, follow_type = self.report.run_id, state.account, state.follow_type
        # Earlier pages of this list in this run have left To_Accounts in sync_seen.
        has_seen = state.cursor != ""
        for page in extract.pages(self.client, account, follow_type, state.cursor, self.page_size):
            rows = transform.parse_page(page.body, account, follow_type)
            now = self.clock()
            with self.transaction() as conn:
                if page.restarted and has_seen:
                    load.forget_seen(conn, run_id, account, follow_type)
                    has_seen = False
                load.upsert_edges(conn, rows.edges, now)
                load.insert_profiles(conn, rows.profiles, now, run_id)
                if page.last:
                    self.report.edges_removed += load.mark_removed(
                        conn, run_id, account, follow_type, rows.to_accounts, now, has_seen
                    )
                    if has_seen:
                        load.forget_seen(conn, run_id, account, follow_type)
                else:
                    load.remember_seen(conn, run_id, account, follow_type, rows.to_accounts)
                    has_seen = True
                checkpoint.advance(
                    conn,
                    run_id,
                    account,
                    follow_type,
                    next_cursor=page.next_cursor,
                    items=len(rows.edges),
                    restarted=page.restarted,
                    now=now,
                )
            self.report.pages += 1
            self.report.items += len(rows.edges)
            self.progress()

    def skip_missing(self, state: checkpoint.ListState) -> None:
        """30003: the account is gone; its listed edges are removed and the list is skipped."""
        now = self.clock()
        with self.transaction() as conn:
            self.report.edges_removed += load.mark_all_removed(
                conn, state.account, state.follow_type, now
            )
            load.forget_seen(conn, self.report.run_id, state.account, state.follow_type)
            checkpoint.settle(
                conn,
                self.report.run_id,
                state.account,
                state.follow_type,
                status="skipped",
                error="the account does not exist (30003)",
                now=now,
            )
        if state.account not in self.report.missing_accounts:
            self.report.missing_accounts.append(state.account)

    def settle(
        self, state: checkpoint.ListState, status: str, error: str, give_up: bool = False
    ) -> None:
        """Record why a list ended early; its cursor stays for the next attempt."""
        with self.transaction() as conn:
            checkpoint.settle(
                conn,
                self.report.run_id,
                state.account,
                state.follow_type,
                status=status,
                error=error,
                now=self.clock(),
                give_up=give_up,
            )

    def progress(self) -> None:
        """Log a progress line every few seconds."""
        now = time.monotonic()
        if now < self.next_progress:
            return
        self.next_progress = now + PROGRESS_EVERY
        calls = self.client.calls - self.calls_at_start
        log.info(
            "run %d: %d lists, %d pages, %d items stored by this process; %.1f calls/s",
            self.report.run_id,
            self.lists_done,
            self.report.pages,
            self.report.items,
            calls / max(now - self.started, 1e-9),
        )


def sync(
    engine: Engine,
    client: FollowClient,
    request: SyncRequest,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> SyncReport:
    """Resume the job's unfinished run (or start one) and crawl it as far as it goes.

    The report says whether the run finished (``report.problem()``); FatalApiError (credentials,
    app) and database errors propagate. Whatever happens, the run stays resumable.
    """
    started = time.monotonic()
    calls_before, retries_before = client.calls, client.retries
    lists = [(account, t) for account in request.accounts for t in request.types]
    now = clock()
    try:
        with engine.begin() as conn:
            run = checkpoint.unfinished_run(conn, request.job)
            if run is not None and request.restart:
                log.info("abandoning unfinished run %d of job %r", run.id, request.job)
                checkpoint.abandon_run(conn, run.id, now)
                run = None
            if run is None:
                options = {"types": list(request.types), "page_size": request.page_size}
                run_id = checkpoint.start_run(conn, request.job, options, now)
            else:
                run_id = run.id
            added = checkpoint.add_lists(conn, run_id, lists, now)
    except sa.exc.IntegrityError:
        raise DatabaseError(
            f"another sync of job {request.job!r} started at the same moment; try again"
        ) from None
    report = SyncReport(run_id=run_id, job=request.job, resumed=run is not None)
    if run is not None:
        log.info("resuming run %d of job %r (%d new lists added)", run_id, request.job, added)
    crawl = _Crawl(engine, client, report, request.page_size, clock)
    try:
        crawl.run()
    except BaseException:
        # Keep the counters if the database still answers, but let the first error speak.
        try:
            _close(engine, report, client, calls_before, retries_before, started, clock)
        except sa.exc.SQLAlchemyError as exc:
            log.error("could not store the run's counters: %s", type(exc).__name__)
        raise
    _close(engine, report, client, calls_before, retries_before, started, clock)
    return report


def _close(
    engine: Engine,
    report: SyncReport,
    client: FollowClient,
    calls_before: int,
    retries_before: int,
    started: float,
    clock: Callable[[], datetime],
) -> None:
    """Fill in the report and store the run's counters (done if nothing is left)."""
    report.requests = client.calls - calls_before
    report.retries = client.retries - retries_before
    report.seconds = time.monotonic() - started
    with engine.begin() as conn:
        report.lists = checkpoint.counts(conn, report.run_id)
        checkpoint.close_run(
            conn,
            report.run_id,
            finished=report.finished,
            requests=report.requests,
            edges_removed=report.edges_removed,
            now=clock(),
        )
