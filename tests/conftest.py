"""Shared fixtures: real databases (a SQLite file, a fresh PostgreSQL database) and a real
sandbox server on a loopback port; and the test tiers (markers from the folder, ``slow`` from
what a test starts, enforced)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from types import CodeType, FunctionType
from typing import Any, NoReturn

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.config import ApiSettings, RetryPolicy, Secret, database_url
from etl.results import SyncReport, SyncRequest
from etl.sandbox import Graph, Sandbox, SandboxConfig, SandboxServer, serve_in_thread
from etl.store import db
from etl.store.schema import profile_snapshots
from etl.sync import sync
from etl.tencent.client import FollowClient
from etl.tencent.info import INFO_BATCH

PG_SERVER = os.environ.get("FOLLOW_ETL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_WAIT = RetryPolicy(attempts=8, max_seconds=60, initial_wait=0.0, max_wait=0.0)
TYPES = (1, 2, 3)  # every follow type: fans, follows, mutual (what a sync crawls by default)
IN_PROCESS_URL = "https://sandbox.test"  # the base URL of a sandbox answering in process

# ---- test tiers ---------------------------------------------------------------------------
# The folder a test lives in is its tier marker: `pytest -m unit` (make test-fast), `-m
# integration`, `-m e2e`. `slow` is on every test that starts a subprocess or a server, decided
# here by rules, not by hand:
#   1. every e2e test (they run the CLI as subprocesses);
#   2. every test using one of SPAWNING_FIXTURES (directly or through another fixture);
#   3. every test whose code names one of SPAWNING_NAMES, in its own body or in a helper
#      function or class of the suite (defined under tests/) that it uses, however deep.
# A test that starts one some other way (through etl code, say) needs @pytest.mark.slow or a
# new entry here: until it has one it fails at once, saying so (`_slow_means_slow`).

TESTS = Path(__file__).parent
TIERS = ("unit", "integration", "e2e")
ALWAYS_SLOW_TIERS = frozenset({"e2e"})
SPAWNING_FIXTURES = frozenset(
    {
        "running_sandbox",  # sandbox servers in threads (tests/conftest.py)
        "spawn",  # CLI processes (tests/e2e/conftest.py)
        "clockshift",  # runs gcc (tests/e2e/conftest.py)
        "pg_restart",  # runs pg_lsclusters and pg_ctlcluster (tests/e2e/conftest.py)
    }
)
SPAWNING_NAMES = frozenset({"subprocess", "Popen", "serve_in_thread", "SandboxServer"})
NOT_SLOW = "this test starts a {what} but is not marked slow: mark it slow (tests/conftest.py)"
# The per-test limit (pytest-timeout, `timeout` in pyproject.toml) is 300 s, ten times the
# slowest test. A test that restarts PostgreSQL (pg_restart) is bounded by its own waits, up to
# about 550 s in all (migrate 60, first page 30, restart 90, sync 120, back up 90 + 90 + 60):
# it gets more, so those waits fail first, with their own messages.
PG_RESTART_TIMEOUT = 900


def _names(code: CodeType) -> set[str]:
    """The global and attribute names ``code`` and the functions nested in it refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names(const)
    return names


def _suite_functions(obj: object) -> list[FunctionType]:
    """``obj`` if it is a function of the suite (its code is under tests/), or the methods of
    ``obj`` if it is a class of the suite; nothing for anything else."""
    if isinstance(obj, type):
        candidates = [v for v in vars(obj).values() if isinstance(v, FunctionType)]
    else:
        candidates = [obj] if isinstance(obj, FunctionType) else []
    return [f for f in candidates if Path(f.__code__.co_filename).is_relative_to(TESTS)]


def _code_starts_something(test: FunctionType) -> bool:
    """True when ``test``, or a suite helper it reaches, names one of SPAWNING_NAMES."""
    todo, seen = [test], set()
    while todo:
        function = todo.pop()
        if function in seen:
            continue
        seen.add(function)
        names = _names(function.__code__)
        if not SPAWNING_NAMES.isdisjoint(names):
            return True
        for name in names:
            todo.extend(_suite_functions(function.__globals__.get(name)))
    return False


def _starts_something(item: pytest.Item) -> bool:
    """True when the test's fixtures or its code start a server or a subprocess."""
    if SPAWNING_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    function: object = getattr(item, "function", None)
    while hasattr(function, "hypothesis"):  # @given wraps the test
        function = function.hypothesis.inner_test
    return isinstance(function, FunctionType) and _code_starts_something(function)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier (its folder) and, by the rules above, ``slow``."""
    for item in items:
        try:
            parts = item.path.relative_to(TESTS).parts
        except ValueError:
            continue  # not one of ours
        tier = parts[0] if len(parts) > 1 else ""
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)
        if tier in ALWAYS_SLOW_TIERS or _starts_something(item):
            item.add_marker(pytest.mark.slow)
        restarts_postgres = "pg_restart" in getattr(item, "fixturenames", ())
        if restarts_postgres and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(PG_RESTART_TIMEOUT))


@pytest.fixture(autouse=True)
def _slow_means_slow(request: pytest.FixtureRequest) -> Iterator[None]:
    """In a test not marked slow, starting a subprocess or a sandbox server fails the test (so
    `-m "not slow"` and the tier markers stay honest)."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return

    def refuse_process(*args: Any, **kwargs: Any) -> NoReturn:
        pytest.fail(NOT_SLOW.format(what="subprocess"))

    def refuse_server(server: SandboxServer, *args: Any, **kwargs: Any) -> NoReturn:
        server.server_close()  # its socket is open already; an unclosed one warns later
        pytest.fail(NOT_SLOW.format(what="sandbox server"))

    with pytest.MonkeyPatch.context() as patch:  # pytest.fail: no `except Exception` hides it
        patch.setattr(subprocess.Popen, "__init__", refuse_process)  # run, check_output, ...
        patch.setattr(SandboxServer, "start", refuse_server)  # serve_in_thread
        patch.setattr(SandboxServer, "serve_forever", refuse_server)  # in the foreground
        yield


@pytest.fixture(scope="session")
def pg_server() -> Iterator[sa.Engine]:
    """An AUTOCOMMIT engine on the Postgres server; skipped locally if down, fatal in CI."""
    engine = sa.create_engine(database_url(PG_SERVER), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL must be reachable under CI=true: {exc.orig}")
        pytest.skip("PostgreSQL is not reachable")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_server: sa.Engine) -> Iterator[URL]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    name = f"follow_etl_test_{uuid.uuid4().hex[:12]}"
    with pg_server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield database_url(PG_SERVER).set(database=name)
    with pg_server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> URL:
    """Each database follow-etl supports, empty: a SQLite file and a PostgreSQL database."""
    if request.param == "sqlite":
        return database_url(f"sqlite:///{tmp_path / 'follow.db'}")
    url: URL = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def engine(db_url: URL) -> Iterator[sa.Engine]:
    """A migrated engine on each supported database."""
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_url: URL) -> Iterator[sa.Engine]:
    """A migrated engine on a fresh PostgreSQL database (for PostgreSQL-only behaviour)."""
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def running_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandbox servers on loopback ports: ``running_sandbox(graph, **config)``."""
    stack: list[AbstractContextManager[SandboxServer]] = []

    def start(graph: Graph, **config: Any) -> SandboxServer:
        manager = serve_in_thread(Sandbox(graph, SandboxConfig(**config)))
        server = manager.__enter__()
        stack.append(manager)
        return server

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


def sandbox_settings(config: SandboxConfig, url: str, **overrides: Any) -> ApiSettings:
    """API settings for a sandbox with ``config`` at ``url``: its app, admin and secret key,
    retries without waits, a generous rate; ``overrides`` replace any of them."""
    values: dict[str, Any] = {
        "sdkappid": config.sdkappid,
        "admin": config.admin,
        "base_urls": (url,),
        "secret_key": Secret(config.secret_key),
        "usersig": None,
        "rate": 5000.0,
        "timeout": 5.0,
        "retry": NO_WAIT,
    }
    values.update(overrides)
    return ApiSettings(**values)


def sandbox_env(server: SandboxServer) -> dict[str, str]:
    """The environment variables that point follow-etl at a sandbox server: its URL, app,
    admin and secret key (what api_settings is, as the CLI and an orchestrator pass it)."""
    config = server.sandbox.config
    return {
        "IM_BASE_URL": server.url,
        "IM_SDKAPPID": str(config.sdkappid),
        "IM_ADMIN": config.admin,
        "IM_SECRET_KEY": config.secret_key,
    }


def api_settings(server: SandboxServer, **overrides: Any) -> ApiSettings:
    """API settings pointing at a sandbox server (see sandbox_settings)."""
    return sandbox_settings(server.sandbox.config, server.url, **overrides)


def make_client(
    api: ApiSettings,
    clock: Callable[[], float] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> FollowClient:
    """A client for ``api`` whose UserSig is derived from its secret key; ``transport``, if
    given, stands between it and the sandbox."""
    return FollowClient.from_settings(api, clock=clock or time.time, transport=transport)


def sandbox_client(
    sandbox: Sandbox,
    *,
    clock: Callable[[], float] = time.time,
    url: str | None = None,
    **overrides: Any,
) -> FollowClient:
    """A client of ``sandbox`` over its in-process transport (or of the server at ``url``),
    its UserSig signed at ``clock`` (the sandbox's own, so it is never early or expired), no
    pacing; ``overrides`` replace settings (see sandbox_settings)."""
    api = sandbox_settings(
        sandbox.config, url or IN_PROCESS_URL, **{"rate": 100_000.0, **overrides}
    )
    return make_client(api, clock, None if url else sandbox.transport())


def sync_with(
    engine: sa.Engine,
    client: FollowClient,
    accounts: list[str],
    *,
    job: str = "test",
    page_size: int = 7,
    **request: Any,
) -> SyncReport:
    """Sync ``accounts`` with ``client``, in small pages so lists span several; ``request``
    holds any other SyncRequest field."""
    return sync(
        engine, client, SyncRequest(job=job, accounts=accounts, page_size=page_size, **request)
    )


def run(
    engine: sa.Engine, server: SandboxServer, accounts: list[str], **request: Any
) -> SyncReport:
    """A sync of ``accounts`` against ``server`` with a fresh client (see sync_with)."""
    with make_client(api_settings(server)) as client:
        return sync_with(engine, client, accounts, **request)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def as_epoch(value: datetime | None) -> int | None:
    """A stored timestamp as Unix seconds (SQLite returns naive UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def stored_lists(engine: sa.Engine) -> dict[tuple[str, int], dict[str, int | None]]:
    """The current (not removed) edges, shaped like Graph.truth()."""
    result: dict[tuple[str, int], dict[str, int | None]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, to_account, follow_time FROM current_follow_edges"
            ).columns(follow_time=sa.DateTime(timezone=True))
        )
        for account, follow_type, to_account, follow_time in rows:
            result.setdefault((account, follow_type), {})[to_account] = as_epoch(follow_time)
    return result


def stored_profiles(engine: sa.Engine) -> dict[tuple[str, int], dict[str, Any]]:
    """Every stored profile snapshot: (user, sequence) -> tags."""
    p = profile_snapshots.c  # through the Table: sequences come back as ints on both databases
    with engine.connect() as conn:
        rows = conn.execute(sa.select(p.user_id, p.profile_sequence, p.tags))
        return {
            (user, seq): (tags if isinstance(tags, dict) else json.loads(tags))
            for user, seq, tags in rows
        }


def expected_profiles(
    graph: Graph, truth: dict[tuple[str, int], dict[str, int]]
) -> dict[tuple[str, int], dict[str, Any]]:
    """The profile versions a crawl of ``truth`` must have stored, from the graph as it is now."""
    result: dict[tuple[str, int], dict[str, Any]] = {}
    for items in truth.values():
        for user in items:
            seq, tags = graph.profile(user)
            result[(user, seq)] = {str(tag["Tag"]): tag["Value"] for tag in tags}
    return result


def nonempty(truth: dict[tuple[str, int], dict[str, int]]) -> dict[tuple[str, int], dict[str, int]]:
    """Truth without empty lists (an empty list stores no rows)."""
    return {key: items for key, items in truth.items() if items}


def minimum_requests(
    truth: dict[tuple[str, int], dict[str, int]],
    accounts: list[str],
    page_size: int,
    types: tuple[int, ...] = TYPES,
) -> int:
    """Requests a perfect crawl needs: one per page, at least one per list, and the
    follow_get_info calls that size lists never crawled before (etl.sizes: 20 accounts each).
    """
    pages = sum(
        max(1, -(-len(truth.get((a, t), {})) // page_size)) for a in accounts for t in types
    )
    return pages + -(-len(accounts) // INFO_BATCH)
