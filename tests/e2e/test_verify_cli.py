"""`python -m etl verify` in a subprocess, against a real sandbox server and a SQLite file."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl.config import database_url
from etl.sandbox import Graph, SandboxServer
from etl.store import db
from etl.store.schema import follow_edges
from tests.e2e.conftest import assert_one_error_line, cli_env, etl, migrate, write_accounts
from tests.e2e.test_cli import USERSIG_LIKE, decodes_as_usersig

Start = Callable[..., SandboxServer]
pytestmark = pytest.mark.slow


def assert_no_secret(server: SandboxServer, *results: subprocess.CompletedProcess[str]) -> None:
    """Neither the secret key nor anything that decodes as a UserSig appears in any output."""
    for result in results:
        text = result.stdout + result.stderr
        assert server.sandbox.config.secret_key not in text
        assert not [t for t in USERSIG_LIKE.findall(text) if decodes_as_usersig(t)]
        assert "Traceback" not in text


def test_verify_exit_codes_and_messages(tmp_path: Path, running_sandbox: Start) -> None:
    """verify exits 0 on a clean store, 9 with one error line naming the damaged list, repairs
    it with --repair (exit 0), and exits 2 for a job that never ran."""
    graph = Graph(users=40, seed=12)
    server = running_sandbox(graph)
    url = f"sqlite:///{tmp_path / 'follow.db'}"
    env = cli_env(url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    synced = etl(env, tmp_path, "sync", "--accounts", str(accounts))
    assert synced.returncode == 0, synced.stderr

    clean = etl(env, tmp_path, "verify")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("verified run 1 of job 'default' in ")
    assert "40 accounts, 120 lists (120 agree, 0 disagree)" in clean.stdout
    assert len(clean.stdout.splitlines()) == 1

    star = max(graph.accounts, key=lambda a: len(graph.list_ids(a, 1)))
    fans = len(graph.list_ids(star, 1))
    engine = db.make_engine(database_url(url))
    e = follow_edges.c
    with engine.begin() as conn:
        victim = conn.execute(
            sa.select(e.to_account).where(e.account == star, e.follow_type == 1).limit(1)
        ).scalar_one()
        conn.execute(
            sa.delete(follow_edges).where(
                e.account == star, e.follow_type == 1, e.to_account == victim
            )
        )
    engine.dispose()

    damaged = etl(env, tmp_path, "verify")
    assert damaged.returncode == 9
    assert f"disagrees: {star} fans: stored {fans - 1}, API {fans}\n" in damaged.stdout
    assert "(119 agree, 1 disagree)" in damaged.stdout
    assert assert_one_error_line(damaged) == (
        "follow-etl: error: 1 lists of 1 accounts disagree with the API's counts; "
        "`verify --repair` re-crawls them"
    )

    as_json = etl(env, tmp_path, "verify", "--json")
    assert as_json.returncode == 9
    doc = json.loads(as_json.stdout)
    assert doc["repair"] is None
    assert doc["verify"]["disagree"] == 1
    assert doc["verify"]["mismatches"] == [
        {"account": star, "follow_type": 1, "stored": fans - 1, "api": fans, "missing": False}
    ]

    repaired = etl(env, tmp_path, "verify", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert (
        "repair: run 2 of job 'default:repair' re-crawled 1 lists "
        "(1 done, 0 skipped, 0 failed or left)" in repaired.stdout
    )
    assert "re-verified the repaired lists of run 1 of job 'default'" in repaired.stdout
    assert "1 lists (1 agree, 0 disagree)" in repaired.stdout

    again = etl(env, tmp_path, "verify")
    assert again.returncode == 0, again.stderr
    assert "(120 agree, 0 disagree)" in again.stdout

    never = etl(env, tmp_path, "verify", "--job", "never")
    assert never.returncode == 2
    assert never.stdout == ""
    assert assert_one_error_line(never) == (
        "follow-etl: error: job 'never' has no runs: nothing to verify (sync it first)"
    )

    assert_no_secret(server, synced, clean, damaged, as_json, repaired, again, never)


def test_verify_without_credentials_is_a_configuration_error(
    tmp_path: Path, running_sandbox: Start
) -> None:
    """verify without IM_SECRET_KEY or IM_USERSIG exits 3 with one line, asking nothing."""
    server = running_sandbox(Graph(users=5, seed=1))
    env = cli_env(f"sqlite:///{tmp_path / 'follow.db'}", server, IM_SECRET_KEY=None)
    migrate(env, tmp_path)
    result = etl(env, tmp_path, "verify")
    assert result.returncode == 3
    assert assert_one_error_line(result).startswith("follow-etl: error: ")
    assert server.sandbox.stats()["requests"] == 0
