"""`sync --accounts-query`: the account list read from SQL, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.config import database_url
from etl.sandbox import Graph, SandboxServer
from etl.store import db
from tests.conftest import TYPES, nonempty, stored_lists
from tests.e2e.conftest import assert_one_error_line, cli_env, etl, migrate

pytestmark = pytest.mark.slow
Start = Callable[..., SandboxServer]


def app_users(url: URL | str, accounts: list[str]) -> None:
    """An app's own table of users, as a team would have it: text ids and a number."""
    engine = db.make_engine(database_url(url) if isinstance(url, str) else url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE app_users (user_id TEXT, score INTEGER, active INT)"))
        conn.execute(
            sa.text("INSERT INTO app_users VALUES (:user_id, :score, :active)"),
            [
                {"user_id": a, "score": i, "active": 1 if i % 3 else 0}
                for i, a in enumerate(accounts)
            ],
        )
    engine.dispose()


def test_accounts_from_a_query_are_synced_exactly(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """The query's first column is the account list: exactly those accounts' lists are stored."""
    graph = Graph(users=40, seed=51)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    app_users(db_url, graph.accounts)
    result = etl(env, tmp_path, "sync", "--page-size", "5", "--accounts-query",
                 "SELECT user_id FROM app_users WHERE active = 1 ORDER BY score")  # fmt: skip
    assert result.returncode == 0, result.stderr
    chosen = [a for i, a in enumerate(graph.accounts) if i % 3]
    engine = db.make_engine(db_url)
    try:
        assert stored_lists(engine) == nonempty(graph.truth(chosen, TYPES))
    finally:
        engine.dispose()


def test_accounts_query_runs_at_accounts_database_url(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """ACCOUNTS_DATABASE_URL points the query at another database than the store."""
    graph = Graph(users=20, seed=52)
    server = running_sandbox(graph)
    source = f"sqlite:///{tmp_path / 'crm.db'}"
    app_users(source, graph.accounts[:5])
    env = cli_env(db_url, server, ACCOUNTS_DATABASE_URL=source)
    migrate(env, tmp_path)
    result = etl(env, tmp_path, "sync", "--accounts-query", "SELECT user_id FROM app_users")
    assert result.returncode == 0, result.stderr
    assert "15 lists" in result.stdout


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT score FROM app_users", "row 1 has int in its first column, not text"),
        ("SELECT NULL FROM app_users", "row 1 has NULL in its first column"),
        ("SELECT user_id FROM no_such_table", "--accounts-query failed"),
        ("SELECT 'a b'", "not a UserID"),
        ("SELECT ' user_a'", "row 1: not a UserID (whitespace, U+0020)"),
        ("SELECT 'user_a '", "row 1: not a UserID (whitespace, U+0020)"),
        ("SELECT 'user\u200b_a'", "row 1: not a UserID (an invisible format character"),
        ("SELECT '\ufeffuser_a'", "row 1: not a UserID (an invisible format character"),
        ("SELECT 'user_a\u202e'", "U+202E"),
    ],
    ids=["number", "null", "failing", "not-a-userid", "leading", "trailing", "zwsp", "bom", "rlo"],
)
def test_a_bad_accounts_query_is_a_usage_error_that_touches_nothing(
    sql: str, message: str, tmp_path: Path
) -> None:
    """A query that fails or returns what cannot be a UserID: exit 2 in one line, no run."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = cli_env(url, None, IM_SDKAPPID="1400000001", IM_SECRET_KEY="k",
                  IM_BASE_URL="http://127.0.0.1:9")  # fmt: skip
    migrate(env, tmp_path)
    app_users(url, ["user_a", "user_b"])
    result = etl(env, tmp_path, "sync", "--accounts-query", sql)
    assert result.returncode == 2, result.stderr
    assert message in assert_one_error_line(result)
    engine = db.make_engine(database_url(url))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sync_runs")).scalar_one() == 0
    engine.dispose()


def test_ids_are_synced_verbatim_from_a_query_and_options(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """An id starting with # from --accounts-query or --account is a real id: its lists are in
    the run's checkpoints exactly as given (the sandbox does not know it: 30003, exit 0)."""
    graph = Graph(users=6, seed=53)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    app_users(db_url, ["#vip", graph.accounts[0]])
    result = etl(env, tmp_path, "sync", "--accounts-query", "SELECT user_id FROM app_users",
                 "--account", "#also")  # fmt: skip
    assert result.returncode == 0, result.stderr
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT DISTINCT account FROM sync_checkpoints")))
    finally:
        engine.dispose()
    assert {row[0] for row in stored} == {"#vip", "#also", graph.accounts[0]}


@pytest.mark.parametrize("account", [" user_a", "user_a\t", "user\u2066_a", "\ufeffuser_a"])
def test_an_account_option_that_is_not_verbatim_is_a_usage_error(
    account: str, tmp_path: Path
) -> None:
    """--account with whitespace at an end, a bidi isolate or a BOM: exit 2 in one line, no
    run (never trimmed into another id)."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = cli_env(url, None, IM_SDKAPPID="1400000001", IM_SECRET_KEY="k",
                  IM_BASE_URL="http://127.0.0.1:9")  # fmt: skip
    migrate(env, tmp_path)
    result = etl(env, tmp_path, "sync", "--account", account)
    assert result.returncode == 2, result.stderr
    assert "accounts: not a UserID (" in assert_one_error_line(result)
    engine = db.make_engine(database_url(url))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sync_runs")).scalar_one() == 0
    engine.dispose()
