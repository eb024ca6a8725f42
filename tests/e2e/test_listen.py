"""`follow-etl listen` as a process: SIGTERM under load ends it 0 within 10 s with every
acknowledged callback stored; kill -9 under load loses no acknowledged callback; a missing
token or a busy port is one line and its exit code.

The helpers here (a listener process, clients posting callbacks in threads, what the tables
hold) serve tests/e2e/test_listen_*.py too."""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.store import db
from etl.store.live import Change
from tests.e2e.conftest import CliProcess, assert_one_error_line, cli_env, etl, migrate
from tests.integration.test_listen import APP, TOKEN, follow, now_ms, unfollow

Spawn = Callable[..., CliProcess]
Callback = tuple[str, bytes, Change]  # query, body, and the change it carries


def listen_env(database: URL | str, **extra: str | None) -> dict[str, str]:
    """The CLI environment of a listener of the test app."""
    merged: dict[str, str | None] = {"IM_SDKAPPID": str(APP), "IM_CALLBACK_TOKEN": TOKEN}
    merged.update(extra)
    return cli_env(database, None, **merged)


def start_listener(
    spawn: Spawn, env: dict[str, str], name: str = "listener"
) -> tuple[CliProcess, str]:
    """``listen --port 0`` with JSON logs; its URL, once its "listening" line is out."""
    proc = spawn(env, "--log-format", "json", "listen", "--port", "0", name=name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in proc.err().splitlines():
            doc = json.loads(line)
            if doc.get("event") == "listening":
                return proc, str(doc["url"])
        if not proc.running():
            pytest.fail(f"the listener exited before listening\n{proc.logs()}")
        time.sleep(0.05)
    pytest.fail(f"the listener did not say it listens within 30 s\n{proc.logs()}")


def callback(account: str, to: str, follows: bool, at: int) -> Callback:
    query, body = (follow if follows else unfollow)(account, to, at=at)
    return query, body, Change(account, to, follows, at)


def distinct_follows(prefix: str = "") -> Iterator[Callback]:
    """Follows of pairs never seen before: u0 -> v0, u1 -> v1, ..."""
    start = now_ms()
    for n in itertools.count():
        yield callback(f"{prefix}u{n}", f"{prefix}v{n}", True, start + n)


class Load:
    """Clients posting callbacks on keep-alive connections, each in a thread, until stopped or
    the listener stops answering; which callbacks got a 200."""

    def __init__(self, urls: list[str], callbacks: Iterator[Callback], clients: int = 8) -> None:
        self.urls, self.callbacks = urls, callbacks
        self.acknowledged: list[Change] = []
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(urls[n % len(urls)],), daemon=True)
            for n in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_for(self, acknowledged: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < acknowledged:
            assert time.monotonic() < deadline, (len(self.acknowledged), self.statuses)
            time.sleep(0.01)

    def _next(self) -> Callback | None:
        with self._lock:
            return next(self.callbacks, None)

    def _client(self, url: str) -> None:
        with httpx.Client(timeout=20) as client:
            while not self._stop.is_set() and (sent := self._next()) is not None:
                query, body, change = sent
                started = time.perf_counter()
                try:
                    answer = client.post(f"{url}?{query}", content=body)
                except httpx.TransportError:  # the listener is gone or going
                    return
                with self._lock:
                    self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1
                    if answer.status_code == 200:
                        self.acknowledged.append(change)
                        self.latencies.append(time.perf_counter() - started)


def stored_changes(engine: sa.Engine) -> set[Change]:
    """The newest change of each direction as live_pairs holds it."""
    found: set[Change] = set()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT low, high, low_ms, low_follows, high_ms, high_follows FROM live_pairs")
        )
        for low, high, low_ms, low_follows, high_ms, high_follows in rows:
            if low_ms is not None:
                found.add(Change(low, high, bool(low_follows), int(low_ms)))
            if high_ms is not None:
                found.add(Change(high, low, bool(high_follows), int(high_ms)))
    return found


def stored(database: URL) -> set[Change]:
    engine = db.make_engine(database)
    try:
        return stored_changes(engine)
    finally:
        engine.dispose()


# ---- tests --------------------------------------------------------------------------------


def test_sigterm_under_load_exits_0_within_10_s_with_every_acknowledged_callback_stored(
    db_url: URL, spawn: Spawn, tmp_path: Path
) -> None:
    """Under load, SIGTERM: the listener stops accepting, answers what is in flight and exits
    0 within 10 s; every callback that got its 200 is in the tables."""
    env = listen_env(db_url)
    migrate(env, tmp_path)
    proc, url = start_listener(spawn, env)
    with Load([url], distinct_follows()) as load:
        load.wait_for(300)
        sent = proc.signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        took = time.monotonic() - sent
    assert code == 0, proc.logs()
    assert took < 10, f"exited {took:.1f} s after SIGTERM"
    assert set(load.acknowledged) <= stored(db_url)
    assert "stopped after" in proc.out()
    assert "Traceback" not in proc.err()


def test_sigterm_while_the_database_holds_every_write_still_exits_0_within_10_s(
    db_url: URL, spawn: Spawn, tmp_path: Path
) -> None:
    """A database that blocks every write (another session holds the lock) and callbacks
    waiting on it: SIGTERM still ends the listener 0 within 10 s, the waiting callbacks
    answered 503, none 200."""
    env = listen_env(db_url)
    migrate(env, tmp_path)
    proc, url = start_listener(spawn, env)
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as holder:
            if engine.dialect.name == "sqlite":
                holder.exec_driver_sql("BEGIN IMMEDIATE")  # the one writer's lock
            else:
                holder.exec_driver_sql("LOCK TABLE live_pairs IN ACCESS EXCLUSIVE MODE")
            with Load([url], distinct_follows(), clients=4) as load:
                time.sleep(1.0)  # the writer is stuck on its first batch; clients wait
                sent = proc.signal(signal.SIGTERM)
                code = proc.wait(timeout=20)
                took = time.monotonic() - sent
            holder.rollback()
    finally:
        engine.dispose()
    assert code == 0, proc.logs()
    assert took < 10, f"exited {took:.1f} s after SIGTERM"
    assert load.acknowledged == []
    assert load.statuses.get(503, 0) >= 1, load.statuses


@pytest.mark.postgres
def test_kill_9_under_load_loses_no_acknowledged_callback(
    pg_url: URL, spawn: Spawn, tmp_path: Path
) -> None:
    """SIGKILL mid-load: every callback answered 200 before it is in PostgreSQL (nothing is
    acknowledged before its commit)."""
    env = listen_env(pg_url)
    migrate(env, tmp_path)
    proc, url = start_listener(spawn, env)
    with Load([url], distinct_follows(), clients=16) as load:
        load.wait_for(500)
        proc.kill()
    acknowledged = set(load.acknowledged)
    assert len(acknowledged) >= 500
    assert acknowledged <= stored(pg_url)


def test_without_a_token_off_loopback_it_exits_3_in_one_line(tmp_path: Path) -> None:
    """A listener on every interface needs IM_CALLBACK_TOKEN: exit 3, one line naming it."""
    env = listen_env(f"sqlite:///{tmp_path / 'x.db'}", IM_CALLBACK_TOKEN=None)
    result = etl(env, tmp_path, "listen", "--host", "0.0.0.0", "--port", "0")  # noqa: S104
    assert result.returncode == 3
    assert "IM_CALLBACK_TOKEN" in assert_one_error_line(result)


def test_a_port_in_use_exits_2_in_one_line(db_url: URL, tmp_path: Path, spawn: Spawn) -> None:
    """A second listener on the first one's port: exit 2, one line."""
    env = listen_env(db_url)
    migrate(env, tmp_path)
    first, url = start_listener(spawn, env)
    port = url.rsplit(":", 1)[1].split("/")[0]
    result = etl(env, tmp_path, "listen", "--port", port)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in assert_one_error_line(result)
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0


def test_an_unmigrated_database_exits_5_in_one_line(tmp_path: Path) -> None:
    """listen checks the schema as every command does."""
    env = listen_env(f"sqlite:///{tmp_path / 'empty.db'}")
    result = etl(env, tmp_path, "listen", "--port", "0")
    assert result.returncode == 5
    assert "follow-etl migrate" in assert_one_error_line(result)


def test_help_names_every_option_and_the_token(tmp_path: Path) -> None:
    """``listen --help`` exits 0 and names its options and IM_CALLBACK_TOKEN; the program's
    help lists the command."""
    env = cli_env(f"sqlite:///{tmp_path / 'unused.db'}")
    result = etl(env, tmp_path, "listen", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--path", "--max-body", "--ack-timeout", "--log-format"):
        assert option in result.stdout, option
    assert "IM_CALLBACK_TOKEN" in result.stdout
    assert "listen" in etl(env, tmp_path, "--help").stdout
    assert not (tmp_path / "unused.db").exists()
