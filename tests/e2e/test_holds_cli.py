"""Held lists from the command line: a mass removal that is not confirmed ends `sync` with
exit 6 and one line naming it, the summary and `status` show it, and bad thresholds are
refused before anything is fetched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxServer
from tests.e2e.conftest import assert_one_error_line, cli_env, etl, migrate, write_accounts
from tests.integration.test_holds import BIG, SEED

Start = Callable[..., SandboxServer]


def test_an_unconfirmed_hold_exits_6_and_status_names_it(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """Two empty pages for a 42-fan list: exit 6 with one error line (after the holds'
    warnings), the summary counts the
    held list, `status` lists it with R of S; a bad threshold is exit 3 / exit 2."""
    graph = Graph(users=60, seed=SEED)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    accounts = str(write_accounts(tmp_path / "accounts.txt", graph.accounts))
    assert etl(env, tmp_path, "sync", "--accounts", accounts).returncode == 0
    server.sandbox.inject(BIG, 1, "empty-page", times=2)
    held = etl(env, tmp_path, "sync", "--accounts", accounts, "--hold-min-edges", "20")
    assert held.returncode == 6, held.stderr
    errors = [line for line in held.stderr.splitlines() if line.startswith("follow-etl: error:")]
    assert len(errors) == 1
    assert "1 lists held for a mass removal" in errors[0]
    assert "Traceback" not in held.stderr
    assert "WARNING user_000047/fans: held: the crawl would mark 42 of 42" in held.stderr
    assert "0 failed, 1 held)" in held.stdout
    assert "0 edges marked removed" in held.stdout
    status = etl(env, tmp_path, "status")
    assert "1 held" in status.stdout
    assert f"{BIG}/fans: 42 of 42 edges; not confirmed" in status.stdout
    bad_env = etl({**env, "FOLLOW_ETL_HOLD_SHARE": "2"}, tmp_path, "sync", "--accounts", accounts)
    assert bad_env.returncode == 3
    assert "FOLLOW_ETL_HOLD_SHARE" in assert_one_error_line(bad_env)
    bad_arg = etl(env, tmp_path, "sync", "--accounts", accounts, "--hold-share", "-1")
    assert bad_arg.returncode == 2
