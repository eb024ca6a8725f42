"""Several apps in one PostgreSQL database: FOLLOW_ETL_SCHEMA keeps each app's tables apart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxServer
from etl.store import db
from tests.conftest import TYPES, nonempty, stored_lists
from tests.e2e.conftest import assert_one_error_line, cli_env, etl, status_json, write_accounts

pytestmark = pytest.mark.slow
Start = Callable[..., SandboxServer]


@pytest.mark.postgres
def test_two_apps_share_one_database_in_two_schemas(
    pg_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """Two apps, two schemas, one database: each migrate, sync and status sees only its own."""
    apps = {"app_a": Graph(users=30, seed=71), "app_b": Graph(users=25, seed=72)}
    for schema, graph in apps.items():
        env = cli_env(pg_url, running_sandbox(graph), FOLLOW_ETL_SCHEMA=schema)
        first = etl(env, tmp_path, "migrate")
        assert first.returncode == 0, first.stderr
        assert f"created schema {schema}" in first.stdout
        assert f"(schema {schema})" in first.stdout
        again = etl(env, tmp_path, "migrate")
        assert "already at revision" in again.stdout
        accounts = write_accounts(tmp_path / f"{schema}.txt", graph.accounts)
        result = etl(env, tmp_path, "sync", "--job", "nightly", "--accounts", str(accounts))
        assert result.returncode == 0, result.stderr
        run = status_json(env, tmp_path, job="nightly")["run"]
        assert (run["id"], run["lists"]["total"]) == (1, 3 * len(graph.accounts))
    for schema, graph in apps.items():
        engine = db.make_engine(pg_url, schema=schema)
        try:
            assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))
        finally:
            engine.dispose()
    plain = db.make_engine(pg_url)
    try:
        with plain.connect() as conn:
            tables = conn.execute(
                sa.text(
                    "SELECT table_schema, count(*) FROM information_schema.tables "
                    "WHERE table_name IN ('follow_edges', 'alembic_version', 'follows') "
                    "GROUP BY table_schema ORDER BY table_schema"
                )
            ).all()
    finally:
        plain.dispose()
    assert [tuple(row) for row in tables] == [("app_a", 3), ("app_b", 3)]  # nothing in public


@pytest.mark.parametrize(
    ("database", "schema", "message"),
    [
        ("sqlite:///{tmp}/x.db", "app_a", "FOLLOW_ETL_SCHEMA needs PostgreSQL"),
        ("postgresql://postgres@127.0.0.1:5432/postgres", "App-A", "lower-case identifier"),
        ("postgresql://postgres@127.0.0.1:5432/postgres", "pg_catalog", "lower-case identifier"),
    ],
    ids=["sqlite", "not-an-identifier", "reserved"],
)
def test_a_bad_schema_setting_is_a_configuration_error(
    database: str, schema: str, message: str, tmp_path: Path
) -> None:
    """A schema on SQLite, or a name that is not a plain identifier: exit 3 in one line."""
    env = cli_env(database.format(tmp=tmp_path), FOLLOW_ETL_SCHEMA=schema)
    result = etl(env, tmp_path, "migrate")
    assert result.returncode == 3
    assert message in assert_one_error_line(result)
