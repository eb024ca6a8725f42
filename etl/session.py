"""What every etl.api call shares: its session on the database, the one mapping of an
exception to the EtlError of its exit code, and how a stop request ends a call.

``session(settings)`` is the one place a call opens an engine: settings' database, schema
checked, disposed at the end, every error inside mapped by ``as_error``. ``as_error`` is the
one place an exception becomes an exit code, for etl.api's exceptions and for the CLI's exit
code (``exit_code``) alike.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import sqlalchemy as sa

from etl.config import Settings, load_settings
from etl.console import REDACTOR
from etl.errors import (
    EXIT_INTERNAL,
    ApiError,
    EtlError,
    FatalApiError,
    Interrupted,
    RunIncomplete,
)
from etl.results import SyncReport
from etl.store import db

KEPT = "what was deleted so far stays deleted"  # what an interrupted prune keeps


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


def settings_from(env: Mapping[str, str] | None = None) -> Settings:
    """The configuration from ``env`` (default: the process environment); ConfigError if it is
    invalid. Its secrets are masked in every log record from now on."""
    settings = load_settings(env)
    secrets = (settings.secret_key, settings.usersig, settings.callback_token)
    REDACTOR.secrets = [s.reveal() for s in secrets if s is not None]
    return settings


def as_error(exc: BaseException) -> EtlError | None:
    """The EtlError ``exc`` stands for, whose ``exit_code`` the process ends with: an EtlError
    itself, but an API error that outlasted its retries as RunIncomplete (6); a database
    error from any layer (SQLAlchemy, psycopg, sqlite3) as DatabaseError, with the driver's
    first line and never the SQL or its parameters; Ctrl-C that got past the graceful stop as
    Interrupted (130). None for anything else: a bug (exit 1)."""
    if isinstance(exc, ApiError) and not isinstance(exc, FatalApiError):
        return RunIncomplete(str(exc))
    if isinstance(exc, EtlError):
        return exc
    if db.is_database_error(exc):
        return db.as_database_error(exc)
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(
            "interrupted; the run is resumable: run the same command again",
            signum=signal.SIGINT,
        )
    return None


def exit_code(exc: BaseException) -> int:
    """The exit code a process that ends with ``exc`` returns: its ``as_error``'s, 1 for a bug."""
    failure = as_error(exc)
    return EXIT_INTERNAL if failure is None else failure.exit_code


@contextmanager
def as_errors() -> Iterator[None]:
    """Any error raised inside becomes the EtlError of its exit code (``as_error``); a bug and
    Ctrl-C propagate as they are."""
    try:
        yield
    except Exception as exc:
        failure = as_error(exc)
        if failure is None or failure is exc:
            raise
        raise failure from exc


@contextmanager
def session(settings: Settings, *, migrated: bool = True) -> Iterator[sa.Engine]:
    """An engine on the settings' database for one call, disposed at the end: the schema must
    be at the newest revision (``migrated=False``: for those that upgrade it), and any error
    inside is the EtlError of its exit code (``as_errors``)."""
    with as_errors():
        engine = db.make_engine(settings.database_url, schema=settings.schema)
        try:
            if migrated:
                db.require_schema(engine)
            yield engine
        finally:
            engine.dispose()


def interrupted(
    stop: threading.Event | None, report: SyncReport | None, what: str = "nothing was fetched"
) -> Interrupted:
    """The Interrupted a stopped call raises: the stop's signal (SIGINT for a plain Event),
    and what was kept (``report``: its run is resumable), carrying ``report``."""
    signum = getattr(stop, "signum", int(signal.SIGINT))
    if report is not None:
        what = f"run {report.run_id} is resumable"
    exc = Interrupted(
        f"stopped by {signal.Signals(signum).name}; {what}: run the same command again",
        signum=signum,
    )
    exc.result = report
    return exc


def outcome(report: SyncReport, stop: threading.Event) -> SyncReport:
    """The report of a clean finish, or the exception its exit code stands for."""
    if stop.is_set():
        raise interrupted(stop, report)
    problem = report.problem()
    if problem is not None:
        problem.result = report
        raise problem
    return report
