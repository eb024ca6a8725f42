"""follow-etl as a library, for orchestrators (Airflow, Dagster, Prefect) and scripts.

    from etl import api

    result = api.sync(accounts_file="accounts.txt", job="nightly")
    print(result.run_id, result.counts())

The functions are the CLI's commands (the CLI is a thin user of them): ``migrate``, ``sync``,
``work``, ``verify``, ``status``, ``prune`` and ``prune_events``. Each takes its
configuration from ``settings`` (etl.config.Settings) or else, like the CLI, from the
environment (``env``: a mapping, default ``os.environ``; the variables of the README's
configuration table).

A call returns when the command would exit 0, and raises otherwise, one exception class per
exit code (etl.errors, ``exc.exit_code``):

    UsageError 2, ConfigError 3, FatalApiError 4, DatabaseError 5 (whatever layer failed),
    RunIncomplete 6, JobBusy 7, VerifyMismatch 9, Interrupted 128 + signal

RunIncomplete, Interrupted and VerifyMismatch carry what was done as ``exc.result`` (a
SyncReport, or a Verification). A run that raised is kept and resumable: the next ``sync`` of
the job resumes it. ``stop`` (a threading.Event, or a ``StopRequest`` that records a signal)
asks a crawl to store the pages in flight and stop within seconds; the call then raises
Interrupted. ``sync``, ``work``, ``verify``, ``prune`` and ``prune_events`` take one; every
phase (the accounts check, adding the run's lists, the crawl, pruning, a verification and its
repair) looks at it between chunks or calls and keeps what it committed.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from etl import holds
from etl import sync as syncing
from etl import verify as verifying
from etl.accounts import Accounts
from etl.config import Settings, is_rate, load_settings
from etl.console import REDACTOR
from etl.errors import (
    ApiError,
    ConfigError,
    DatabaseError,
    EtlError,
    FatalApiError,
    Interrupted,
    JobBusy,
    RunIncomplete,
    Stopped,
    UsageError,
    VerifyMismatch,
)
from etl.results import (
    DEFAULT_CONCURRENCY,
    Progress,
    SyncReport,
    SyncRequest,
    Verification,
    check_concurrency,
)
from etl.store import db, runs, workers
from etl.store import retention as pruning
from etl.store import status as statuses
from etl.store.retention import DEFAULT_KEEP_RUNS, Pruned
from etl.tencent.client import FollowClient

__all__ = [
    "ConfigError",
    "DatabaseError",
    "EtlError",
    "FatalApiError",
    "Interrupted",
    "JobBusy",
    "Migration",
    "Progress",
    "Pruned",
    "RunIncomplete",
    "Settings",
    "StopRequest",
    "SyncReport",
    "UsageError",
    "Verification",
    "VerifyMismatch",
    "migrate",
    "prune",
    "prune_events",
    "settings_from",
    "status",
    "sync",
    "verify",
    "work",
]

log = logging.getLogger(__name__)


class StopRequest(threading.Event):
    """A stop request that remembers why: ``request(signal.SIGTERM)`` from a signal handler
    or an orchestrator's kill hook makes the call raise Interrupted with exit code 143. A
    plain ``set()`` counts as SIGINT (130)."""

    def __init__(self) -> None:
        super().__init__()
        self.signum = int(signal.SIGINT)

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask the crawl to stop, for ``signum``."""
        self.signum = int(signum)
        self.set()


@dataclass(frozen=True)
class Migration:
    """What ``migrate`` did."""

    before: str | None  # the revision the database was at (None: empty)
    after: str
    created_schema: bool  # FOLLOW_ETL_SCHEMA did not exist and was created

    @property
    def changed(self) -> bool:
        """True when the schema was upgraded."""
        return self.before != self.after


def settings_from(env: Mapping[str, str] | None = None) -> Settings:
    """The configuration from ``env`` (default: the process environment); ConfigError if it is
    invalid. Its secrets are masked in every log record from now on."""
    settings = load_settings(env)
    REDACTOR.secrets = [
        s.reveal() for s in (settings.secret_key, settings.usersig) if s is not None
    ]
    return settings


def migrate(*, settings: Settings | None = None, env: Mapping[str, str] | None = None) -> Migration:
    """Upgrade the database (and make FOLLOW_ETL_SCHEMA's schema if missing) to the newest
    revision."""
    settings = settings or settings_from(env)
    with _one_exception_per_exit_code():
        engine = _engine(settings)
        try:
            created = settings.schema is not None and db.create_schema(engine, settings.schema)
            before = db.current_revision(engine)
            db.upgrade(engine)
            after = db.current_revision(engine)
        finally:
            engine.dispose()
    return Migration(before, after or "", created)


def sync(
    accounts: Iterable[str] = (),
    *,
    accounts_file: str | Path | None = None,
    accounts_query: str | None = None,
    job: str = "default",
    types: Iterable[int] = (1, 2, 3),
    page_size: int = 1000,
    restart: bool = False,
    rate: float | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    wait: bool = False,
    keep_runs: int = DEFAULT_KEEP_RUNS,
    hold_min_edges: int | None = None,
    hold_share: float | None = None,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_run: Callable[[int], None] | None = None,
) -> SyncReport:
    """Crawl the lists of the accounts and load them: ``accounts`` (UserIDs), an
    ``accounts_file`` (one per line, ``-`` for stdin) and/or the first column of
    ``accounts_query`` (SQL run at ACCOUNTS_DATABASE_URL, else DATABASE_URL).

    Resumes the job's unfinished run, or starts one. Returns the report of a finished run;
    raises JobBusy while another sync holds the job (unless ``wait``), RunIncomplete when
    lists are left or given up, Interrupted after ``stop``. ``on_progress`` gets a snapshot
    about twice a second; ``on_run`` the run's id as soon as it is open. After a clean finish
    the job keeps the checkpoints of its last ``keep_runs`` runs (``prune``; 0 keeps all).
    A crawl that would remove at least ``hold_min_edges`` of a list's stored edges and more
    than ``hold_share`` of them is held until a second crawl confirms it (etl.holds; None:
    the settings', FOLLOW_ETL_HOLD_MIN_EDGES and FOLLOW_ETL_HOLD_SHARE, default 20 and 0.5).
    """
    settings = settings or settings_from(env)
    _check_options(page_size=page_size, rate=rate, concurrency=concurrency, types=types)
    if keep_runs < 0:
        raise UsageError(f"keep_runs must be 0 (keep all) or more, got {keep_runs}")
    min_edges = settings.holds.min_edges if hold_min_edges is None else hold_min_edges
    share = settings.holds.share if hold_share is None else hold_share
    if problem := holds.invalid(min_edges, share):
        raise UsageError(problem)
    api = settings.api()
    stop = stop if stop is not None else threading.Event()
    with _one_exception_per_exit_code():
        try:
            listed = _accounts(settings, accounts, accounts_file, accounts_query, stop)
        except Stopped:  # stopped while checking the accounts: nothing was stored
            raise _interrupted(stop, None) from None
        engine = _engine(settings)
        try:
            db.require_schema(engine)
            request = SyncRequest(
                job=job,
                accounts=listed,
                types=tuple(types),
                page_size=page_size,
                restart=restart,
                rate=rate or api.rate,
                concurrency=concurrency,
                wait=wait,
                db_seconds=settings.db_retry_seconds,
                keep_runs=keep_runs,
                holds=holds.Thresholds(min_edges, float(share)),
            )
            with FollowClient.from_settings(api) as client:
                try:
                    report = syncing.sync(
                        engine,
                        client,
                        request,
                        on_progress=on_progress,
                        stop=stop,
                        on_run=on_run or (lambda run_id: None),
                    )
                except Stopped:  # stopped while waiting for the job (wait=True)
                    raise _interrupted(stop, None) from None
        finally:
            listed.close()
            engine.dispose()
    return _outcome(report, stop)


def work(
    job: str = "default",
    *,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_run: Callable[[int], None] | None = None,
) -> SyncReport | None:
    """Join the job's unfinished run, with the run's own settings (PostgreSQL only), until no
    list is left; None when the job has no unfinished run. Raises as ``sync`` does."""
    settings = settings or settings_from(env)
    api = settings.api()
    stop = stop if stop is not None else threading.Event()
    with _one_exception_per_exit_code():
        engine = _engine(settings)
        try:
            db.require_schema(engine)
            with FollowClient.from_settings(api) as client:
                report = syncing.work(
                    engine,
                    client,
                    job,
                    on_progress=on_progress,
                    stop=stop,
                    db_seconds=settings.db_retry_seconds,
                    on_run=on_run or (lambda run_id: None),
                )
        finally:
            engine.dispose()
    return None if report is None else _outcome(report, stop)


def verify(
    job: str = "default",
    *,
    repair: bool = False,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
) -> Verification:
    """Compare the stored size of every list the job's latest run crawled to its end with
    follow_get_info; with ``repair``, re-crawl those that disagree (as job ``JOB:repair``) and
    compare them again. Raises VerifyMismatch (with the Verification) while lists disagree,
    UsageError if the job has no runs, Interrupted after ``stop``."""
    settings = settings or settings_from(env)
    api = settings.api()
    stop = stop if stop is not None else threading.Event()
    with _one_exception_per_exit_code():
        engine = _engine(settings)
        try:
            db.require_schema(engine)
            with FollowClient.from_settings(api) as client:
                client.interrupt_on(stop)
                try:
                    report = verifying.verify(engine, client, job, stop=stop)
                    if report is None:
                        raise UsageError(
                            f"job {job!r} has no runs: nothing to verify (sync it first)"
                        )
                    repaired = None
                    if repair and report.disagree:
                        repaired = verifying.repair(engine, client, report, stop=stop)
                except Stopped:
                    raise _interrupted(
                        stop, None, "what was compared or re-crawled is kept"
                    ) from None
        finally:
            engine.dispose()
    result = Verification(report, repaired)
    problem = result.problem()
    if problem is not None:
        problem.result = result
        raise problem
    return result


def status(
    job: str = "default", *, settings: Settings | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The job's latest run: the ``status --json`` document (its shape is in the README);
    ``{"job": job, "run": None}`` before the first run."""
    settings = settings or settings_from(env)
    with _one_exception_per_exit_code():
        engine = _engine(settings)
        try:
            db.require_schema(engine)
            with engine.connect() as conn:
                return statuses.status_document(conn, job)
        finally:
            engine.dispose()


def prune(
    job: str | None = None,
    *,
    keep_runs: int = DEFAULT_KEEP_RUNS,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
) -> Pruned:
    """Delete the checkpoints of the job's ended runs but its last ``keep_runs`` (at least 1:
    the latest run is always kept), and the sync_seen rows runs left when they ended; every
    job when ``job`` is None. Run rows and their counters stay. UsageError for a job without
    runs or a ``keep_runs`` below 1."""
    settings = settings or settings_from(env)
    if keep_runs < 1:
        raise UsageError(
            f"keep_runs must be at least 1 (the latest run is always kept), got {keep_runs}"
        )
    with _one_exception_per_exit_code():
        engine = _engine(settings)
        try:
            db.require_schema(engine)
            with engine.connect() as conn:
                jobs = pruning.jobs(conn) if job is None else [job]
                if job is not None and runs.latest_run(conn, job) is None:
                    raise UsageError(f"job {job!r} has no runs: nothing to prune")
                now = workers.DbClock(conn)()
            total = Pruned()
            for name in jobs:
                try:
                    done = pruning.prune(engine, name, keep_runs, now, stop=stop)
                except Stopped:
                    raise _interrupted(stop, None, _KEPT) from None
                total.runs += done.runs
                total.checkpoints += done.checkpoints
                total.seen += done.seen
            return total
        finally:
            engine.dispose()


def prune_events(
    before: datetime,
    *,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Delete the follow_edge_events observed before ``before`` (a naive time is UTC), in
    chunks; return how many went. UsageError for a time in the future (it would delete the
    events of runs still to be read)."""
    settings = settings or settings_from(env)
    if before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    if before > datetime.now(UTC):
        raise UsageError(
            f"--before {before.isoformat()} is in the future: give a past date "
            "(events observed before it are deleted)"
        )
    with _one_exception_per_exit_code():
        engine = _engine(settings)
        try:
            db.require_schema(engine)
            try:
                return pruning.prune_events(engine, before, stop=stop)
            except Stopped:
                raise _interrupted(stop, None, _KEPT) from None
        finally:
            engine.dispose()


def _engine(settings: Settings) -> sa.Engine:
    return db.make_engine(settings.database_url, schema=settings.schema)


def _accounts(
    settings: Settings,
    accounts: Iterable[str],
    accounts_file: str | Path | None,
    accounts_query: str | None,
    stop: threading.Event | None = None,
) -> Accounts:
    """The requested accounts, every one checked now (UsageError; Stopped once ``stop`` is
    set), read again later."""
    if isinstance(accounts, str):
        raise UsageError("accounts must be a list of UserIDs, not one string")
    query = None
    if accounts_query is not None:
        url = settings.accounts_database_url or settings.database_url
        query = (db.make_engine(url), accounts_query)
    source = None if accounts_file is None else str(accounts_file)
    try:
        listed = Accounts(source, list(accounts), query=query, extra_label="accounts", stop=stop)
    finally:
        if query is not None:
            query[0].dispose()
    if not listed.count:
        listed.close()
        raise UsageError(
            "no accounts to sync: give accounts, an accounts file or an accounts query"
        )
    return listed


def _check_options(
    *, page_size: int, rate: float | None, concurrency: int, types: Iterable[int]
) -> None:
    """The CLI's argument checks, for callers that skip the CLI (UsageError)."""
    if not 1 <= page_size <= 1000:
        raise UsageError(f"page_size must be 1..1000, got {page_size}")
    if rate is not None and not is_rate(rate):
        raise UsageError(f"rate must be a positive number of calls per second, got {rate}")
    check_concurrency(concurrency)
    chosen = tuple(types)
    if not chosen or any(t not in (1, 2, 3) for t in chosen) or len(set(chosen)) != len(chosen):
        raise UsageError(f"types must be distinct follow types among 1, 2, 3, got {chosen}")


def _outcome(report: SyncReport, stop: threading.Event) -> SyncReport:
    """The report of a clean finish, or the exception its exit code stands for."""
    if stop.is_set():
        raise _interrupted(stop, report)
    problem = report.problem()
    if problem is not None:
        problem.result = report
        raise problem
    return report


_KEPT = "what was deleted so far stays deleted"
_COMPARED = "the mismatches found and the lists re-crawled so far are kept"


def _interrupted(
    stop: threading.Event | None, report: SyncReport | None, what: str = "nothing was fetched"
) -> Interrupted:
    signum = getattr(stop, "signum", int(signal.SIGINT))
    if report is not None:
        what = f"run {report.run_id} is resumable"
    exc = Interrupted(
        f"stopped by {signal.Signals(signum).name}; {what}: run the same command again",
        signum=signum,
    )
    exc.result = report
    return exc


@contextmanager
def _one_exception_per_exit_code() -> Iterator[None]:
    """A database error from any layer (SQLAlchemy, psycopg, sqlite3) becomes DatabaseError,
    with the driver's first line and never the SQL or its parameters; an API error that
    outlasted its retries (exit 6) becomes RunIncomplete."""
    try:
        yield
    except FatalApiError:
        raise
    except ApiError as exc:
        raise RunIncomplete(str(exc)) from exc
    except EtlError:
        raise
    except Exception as exc:
        if db.is_database_error(exc):
            raise db.as_database_error(exc) from exc
        raise
