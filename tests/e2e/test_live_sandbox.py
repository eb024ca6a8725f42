"""`follow-etl sandbox --webhook-url` and `follow-etl listen` as processes: the sandbox posts
the follows made through its admin route, signed with IM_CALLBACK_TOKEN (the listener's
variable too), and the listener stores them: the edges are current in the tables, and
GET /sandbox/webhook says every callback was delivered."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxConfig
from etl.store import db
from tests.e2e.conftest import CliProcess, etl, migrate, write_accounts
from tests.e2e.test_listen import Spawn, listen_env, start_listener

USERS = 12


def start_sandbox(spawn: Spawn, env: dict[str, str], *flags: str) -> tuple[CliProcess, str]:
    """``sandbox --port 0`` with these flags; its URL, once it says where it serves."""
    proc = spawn(env, "sandbox", "--port", "0", "--users", str(USERS), *flags, name="sandbox")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        first = proc.out().partition("\n")[0]
        if " at " in first:
            return proc, first.split(" at ", 1)[1].split(";", 1)[0].strip()
        if not proc.running():
            pytest.fail(f"the sandbox exited before serving\n{proc.logs()}")
        time.sleep(0.05)
    pytest.fail(f"the sandbox did not start within 30 s\n{proc.logs()}")


def admin(url: str, path: str, body: object = None) -> Any:
    """An admin request to the sandbox at ``url``; the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    method = "GET" if data is None else "POST"
    request = urllib.request.Request(url + path, data=data, method=method)  # noqa: S310 (ours)
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback, ours)
        return json.load(answer)


def current(database: URL, edges: list[tuple[str, int, str]]) -> set[tuple[str, int, str]]:
    """Which of these (account, type, to_account) edges are current."""
    engine = db.make_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT account, follow_type, to_account FROM current_follow_edges")
            ).all()
    finally:
        engine.dispose()
    return {(a, int(t), b) for a, t, b in rows} & set(edges)


def test_the_sandbox_command_posts_what_the_listener_stores(
    spawn: Spawn, tmp_path: Path, pg_url: URL
) -> None:
    """A follow-back through POST /sandbox/follow reaches the tables as a mutual pair, and an
    unfollow through POST /sandbox/unfollow ends it; duplicates change nothing."""
    env = listen_env(pg_url)
    migrate(env, tmp_path)
    _, listener = start_listener(spawn, env)
    _, url = start_sandbox(spawn, env, "--webhook-url", listener, "--webhook-duplicates", "1")
    graph = Graph(USERS, seed=1)  # the sandbox's graph: same size, same seed
    accounts = graph.accounts
    sync_env = {**env, "IM_BASE_URL": url, "IM_SECRET_KEY": SandboxConfig().secret_key}
    listed = write_accounts(tmp_path / "accounts.txt", accounts)
    synced = etl(sync_env, tmp_path, "sync", "--job", "live", "--accounts", str(listed))
    assert synced.returncode == 0, synced.stderr  # the baseline: every list kept from now on
    account = next(a for a in accounts if set(graph.list_ids(a, 1)) - set(graph.list_ids(a, 2)))
    fan = sorted(set(graph.list_ids(account, 1)) - set(graph.list_ids(account, 2)))[0]
    edges = [(account, 2, fan), (fan, 1, account), (account, 3, fan), (fan, 3, account)]

    assert admin(url, "/sandbox/follow", {"from": account, "to": [fan]})["changed"] == [fan]
    record = admin(url, "/sandbox/webhook?wait=10")
    assert current(pg_url, edges) == set(edges)
    admin(url, "/sandbox/unfollow", {"from": account, "to": [fan]})
    record = admin(url, "/sandbox/webhook?wait=10")
    assert current(pg_url, edges) == set()
    assert (fan, 2, account) in current(pg_url, [(fan, 2, account)])  # the fan still follows
    assert record["counts"] | {"silent": 0} == {
        "callbacks": 2,
        "changes": 2,
        "delivered": 2,
        "dropped": 0,
        "failed": 0,
        "duplicated": 2,
        "pending": 0,
        "posts": 4,
        "silent": 0,
    }
