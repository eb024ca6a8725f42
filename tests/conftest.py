"""Shared fixtures: real databases (a SQLite file, a fresh PostgreSQL database) and a real
sandbox server on a loopback port."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl import db
from etl.client import FollowClient
from etl.config import ApiSettings, RetryPolicy, Secret, database_url
from etl.sandbox import Graph, Sandbox, SandboxConfig, SandboxServer, serve_in_thread
from etl.schema import profile_snapshots

PG_SERVER = os.environ.get("FOLLOW_ETL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_WAIT = RetryPolicy(attempts=8, max_seconds=60, initial_wait=0.0, max_wait=0.0)


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


def api_settings(server: SandboxServer, **overrides: Any) -> ApiSettings:
    """API settings pointing at a sandbox server, fast retries, generous rate."""
    config = server.sandbox.config
    values: dict[str, Any] = {
        "sdkappid": config.sdkappid,
        "admin": config.admin,
        "base_urls": (server.url,),
        "secret_key": Secret(config.secret_key),
        "usersig": None,
        "rate": 5000.0,
        "timeout": 5.0,
        "retry": NO_WAIT,
    }
    values.update(overrides)
    return ApiSettings(**values)


def make_client(api: ApiSettings, clock: Callable[[], float] | None = None) -> FollowClient:
    """A client for ``api`` whose UserSig is derived from its secret key."""
    return FollowClient.from_settings(api, clock=clock or time.time)


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
            result[(user, seq)] = {tag["Tag"]: tag["Value"] for tag in tags}
    return result


def nonempty(truth: dict[tuple[str, int], dict[str, int]]) -> dict[tuple[str, int], dict[str, int]]:
    """Truth without empty lists (an empty list stores no rows)."""
    return {key: items for key, items in truth.items() if items}


def minimum_requests(
    truth: dict[tuple[str, int], dict[str, int]],
    accounts: list[str],
    page_size: int,
    types: tuple[int, ...] = (1, 2, 3),
) -> int:
    """Requests a perfect crawl needs: one per page, at least one per list."""
    return sum(max(1, -(-len(truth.get((a, t), {})) // page_size)) for a in accounts for t in types)
