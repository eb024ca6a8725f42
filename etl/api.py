"""follow-etl as a library, for orchestrators (Airflow, Dagster, Prefect) and scripts.

    from etl import api

    result = api.sync(accounts_file="accounts.txt", job="nightly")
    print(result.run_id, result.counts())

The functions are the CLI's commands (the CLI is a thin user of them): ``migrate``, ``sync``,
``work``, ``verify``, ``status``, ``prune``, ``prune_events``, ``report``, ``usersig``,
``listen`` and ``demo`` (with ``demo_summary``). Each works in one ``etl.session.session``
(the settings' database, its schema checked, every error the EtlError of its exit code,
disposed at the end) and takes its configuration from ``settings`` (etl.config.Settings) or
else, like the CLI, from the environment (``env``: a mapping, default ``os.environ``; the
variables of the README's configuration table).

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

``as_error`` (etl.session) is the one place an exception becomes the EtlError of its exit
code: every call's exception, and the CLI's exit code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl import sync as syncing
from etl import verify as verifying
from etl.checks import report_path, requested_accounts, sync_request
from etl.config import Settings
from etl.demo import Demo, demo
from etl.demo import summary as demo_summary
from etl.errors import (
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
from etl.live import settings as listening
from etl.live.settings import ListenReport
from etl.results import DEFAULT_CONCURRENCY, Migration, Progress, SyncReport, Verification
from etl.session import (
    KEPT,
    StopRequest,
    as_error,
    as_errors,
    interrupted,
    outcome,
    session,
    settings_from,
)
from etl.store import db, runs, workers
from etl.store import retention as pruning
from etl.store import status as statuses
from etl.store.demo import StoreSummary
from etl.store.retention import DEFAULT_KEEP_RUNS, Pruned
from etl.tencent.client import FollowClient
from etl.tencent.usersig import DEFAULT_EXPIRE, generate

if TYPE_CHECKING:
    from etl.report import ReportData

__all__ = [
    "ConfigError",
    "DatabaseError",
    "Demo",
    "EtlError",
    "FatalApiError",
    "Interrupted",
    "JobBusy",
    "ListenReport",
    "Migration",
    "Progress",
    "Pruned",
    "RunIncomplete",
    "Settings",
    "StopRequest",
    "StoreSummary",
    "SyncReport",
    "UsageError",
    "Verification",
    "VerifyMismatch",
    "as_error",
    "demo",
    "demo_summary",
    "listen",
    "migrate",
    "prune",
    "prune_events",
    "report",
    "settings_from",
    "status",
    "sync",
    "usersig",
    "verify",
    "work",
]


def migrate(*, settings: Settings | None = None, env: Mapping[str, str] | None = None) -> Migration:
    """Upgrade the database (and make FOLLOW_ETL_SCHEMA's schema if missing) to the newest
    revision."""
    settings = settings or settings_from(env)
    with session(settings, migrated=False) as engine:
        created = settings.schema is not None and db.create_schema(engine, settings.schema)
        before = db.current_revision(engine)
        db.upgrade(engine)
        after = db.current_revision(engine)
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
    request = sync_request(
        settings,
        job=job,
        types=tuple(types),
        page_size=page_size,
        restart=restart,
        rate=rate,
        concurrency=concurrency,
        wait=wait,
        keep_runs=keep_runs,
        hold_min_edges=hold_min_edges,
        hold_share=hold_share,
    )
    stop = stop if stop is not None else threading.Event()
    with as_errors():
        try:
            listed = requested_accounts(settings, accounts, accounts_file, accounts_query, stop)
        except Stopped:  # stopped while checking the accounts: nothing was stored
            raise interrupted(stop, None) from None
    try:
        with session(settings) as engine, FollowClient.from_settings(settings.api()) as client:
            try:
                report = syncing.sync(
                    engine,
                    client,
                    replace(request, accounts=listed),
                    on_progress=on_progress,
                    stop=stop,
                    on_run=on_run or (lambda run_id: None),
                )
            except Stopped:  # stopped while waiting for the job (wait=True)
                raise interrupted(stop, None) from None
    finally:
        listed.close()
    return outcome(report, stop)


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
    remote = settings.api()  # a ConfigError before the database is reached
    stop = stop if stop is not None else threading.Event()
    with session(settings) as engine, FollowClient.from_settings(remote) as client:
        report = syncing.work(
            engine,
            client,
            job,
            on_progress=on_progress,
            stop=stop,
            db_seconds=settings.db_retry_seconds,
            on_run=on_run or (lambda run_id: None),
        )
    return None if report is None else outcome(report, stop)


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
    remote = settings.api()  # a ConfigError before the database is reached
    stop = stop if stop is not None else threading.Event()
    with session(settings) as engine, FollowClient.from_settings(remote) as client:
        client.interrupt_on(stop)
        try:
            report = verifying.verify(engine, client, job, stop=stop)
            if report is None:
                raise UsageError(f"job {job!r} has no runs: nothing to verify (sync it first)")
            repaired = None
            if repair and report.disagree:
                repaired = verifying.repair(engine, client, report, stop=stop)
        except Stopped:
            raise interrupted(stop, None, "what was compared or re-crawled is kept") from None
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
    with session(settings or settings_from(env)) as engine, engine.connect() as conn:
        return statuses.status_document(conn, job)


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
    with session(settings) as engine:
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
                raise interrupted(stop, None, KEPT) from None
            total.runs += done.runs
            total.checkpoints += done.checkpoints
            total.seen += done.seen
        return total


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
    with session(settings) as engine:
        try:
            return pruning.prune_events(engine, before, stop=stop)
        except Stopped:
            raise interrupted(stop, None, KEPT) from None


def report(
    out: str | Path = "report.html",
    job: str | None = None,
    *,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
) -> ReportData:
    """Write the HTML report (headline numbers, charts, latest runs; ``job``: that job's runs
    only) to ``out``, and return what it shows. UsageError for an ``out`` that cannot be
    written, checked before any query runs."""
    from etl import report as reports

    path = report_path(out)
    with session(settings or settings_from(env)) as engine, engine.connect() as conn:
        data = reports.collect(conn, job)
    try:
        path.write_text(reports.render(data), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from exc
    return data


def usersig(
    expire: int = DEFAULT_EXPIRE,
    *,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """A UserSig for IM_ADMIN made from IM_SECRET_KEY, valid ``expire`` seconds from now;
    ConfigError without IM_SDKAPPID and IM_SECRET_KEY."""
    settings = settings or settings_from(env)
    if settings.sdkappid is None or settings.secret_key is None:
        raise ConfigError("usersig needs IM_SDKAPPID and IM_SECRET_KEY")
    return generate(
        settings.sdkappid,
        settings.admin,
        settings.secret_key.reveal(),
        now=int(time.time()),
        expire=expire,
    )


def listen(
    *,
    host: str = listening.DEFAULT_HOST,
    port: int = listening.DEFAULT_PORT,
    path: str = listening.DEFAULT_PATH,
    max_body: int = listening.DEFAULT_MAX_BODY,
    ack_timeout: float = listening.DEFAULT_ACK_TIMEOUT,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    ready: Callable[[str], None] | None = None,
) -> ListenReport:
    """Apply Tencent's follow callbacks POSTed to http://HOST:PORT/PATH (etl.live), each
    acknowledged once committed, until ``stop`` (or, in the main thread, SIGINT or SIGTERM);
    ``ready`` gets the URL once it serves. ConfigError without IM_SDKAPPID, or without
    IM_CALLBACK_TOKEN off loopback; UsageError for an address it cannot bind."""
    from etl.live.server import serve  # uvicorn is imported by `listen` alone

    settings = settings or settings_from(env)
    checked = listening.listen_settings(settings, host, port, path, max_body, ack_timeout)
    with session(settings) as engine:
        return serve(engine, checked, stop=stop, ready=ready)
