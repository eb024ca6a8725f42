"""What ``follow-etl demo`` (``make demo``) runs around its sync: the database migrated, the
sandbox serving a graph that changed once per earlier demo run, a listener taking the
sandbox's callbacks, and the figures printed after it (etl.api's ``demo`` and
``demo_summary``; ``Demo.follow``).

The live part, after the crawl: the listener (etl.live, in a thread of this process, on
loopback, checking a token the demo makes and gives the sandbox) takes the callbacks the
sandbox posts as its graph changes. ``Demo.follow`` makes one follow in the sandbox's graph (a
follow-back where there is one, so that a mutual pair appears) and times it until the tables
hold its edges; the next sync of the two accounts (job ``LIVE_JOB``, so that ``earlier``
counts the demo's own runs only) then reconciles their lists: the change was seen live, and
the crawl found nothing the callbacks missed.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etl.config import Secret, Settings
from etl.session import session, settings_from
from etl.store import db
from etl.store import demo as demo_store
from etl.store.demo import StoreSummary

if TYPE_CHECKING:
    from etl.sandbox import Graph, Sandbox

JOB = "demo"  # the job every demo run syncs
LIVE_JOB = "demo-live"  # the sync after the live change
_READY_S = 30.0  # the listener's start, at most
_WAIT_S = 5.0  # how long ``follow`` waits for the change to reach the tables


@dataclass(frozen=True)
class LiveFollow:
    """One follow made in the sandbox's graph while the listener runs, and when it arrived."""

    account: str
    to_account: str
    mutual: bool  # to_account followed account already: the follow made a mutual pair
    edges: int  # edges it makes current: 2, or 4 with the mutual pair
    seconds: float | None  # from the follow until the tables held them all; None: not in time


@dataclass(frozen=True)
class Demo:
    """The demo's sandbox, serving while ``demo``'s block runs, and how to reach it."""

    settings: Settings  # the caller's, with the sandbox's credentials, address and ``rate``
    url: str
    accounts: list[str]  # every account of the sandbox's graph
    earlier: int  # finished demo runs before this one: the graph changed once for each
    database: str  # where the demo stores, as it may be shown (no password)
    sandbox: Sandbox  # the sandbox serving (its graph, its webhook)
    listener: str  # the listener's URL, where the sandbox posts its callbacks
    job: str = JOB
    live_job: str = LIVE_JOB  # the job of the sync after the live follow

    def follow(self, *, wait: float = _WAIT_S) -> LiveFollow:
        """One follow in the sandbox's graph (a follow-back where there is one), posted by its
        webhook to the listener; the time until its edges are current in the tables (None:
        not within ``wait`` seconds)."""
        account, to, mutual = _pair(self.sandbox.graph)
        edges = [(account, 2, to), (to, 1, account)]
        edges += [(account, 3, to), (to, 3, account)] if mutual else []
        seconds = None
        with session(self.settings) as engine, engine.connect() as conn:
            started = time.perf_counter()
            self.sandbox.follow(account, [to], follows=True)
            while time.perf_counter() - started < wait:
                if demo_store.current_edges(conn, edges) == len(edges):
                    seconds = time.perf_counter() - started
                    break
                conn.rollback()  # the next look sees what committed since
                time.sleep(0.002)
        return LiveFollow(account, to, mutual, len(edges), seconds)


@contextmanager
def demo(
    users: int = 300,
    *,
    seed: int = 1,
    rate: float = 150.0,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Demo]:
    """Migrate the database, then serve a sandbox graph of ``users``, and a listener its
    webhook posts to, for the ``with`` block. Each demo run sees the graph changed once more
    than the last (unfollows, new follows, profile updates), so a second demo shows removals
    and new profile versions."""
    from etl.sandbox import Graph, Sandbox, SandboxConfig, serve_in_thread
    from etl.sandbox.webhook import WebhookConfig

    settings = settings or settings_from(env)
    token = Secret(secrets.token_hex(16))  # the demo's callback token: both ends know it
    config = SandboxConfig()
    graph = Graph(users=users, seed=seed)
    with session(settings, migrated=False) as engine:
        db.upgrade(engine)
        with engine.connect() as conn:
            earlier = demo_store.finished_runs(conn, JOB)
    for generation in range(1, earlier + 1):
        graph.mutate(seed=generation)
    listening = dataclasses.replace(settings, sdkappid=config.sdkappid, callback_token=token)
    with _listener(listening) as listener:
        hook = WebhookConfig(url=listener, token=token)
        sandbox = Sandbox(graph, dataclasses.replace(config, webhook=hook))
        with serve_in_thread(sandbox) as server:
            sandboxed = dataclasses.replace(
                settings,
                sdkappid=config.sdkappid,
                admin=config.admin,
                base_url=server.url,
                secret_key=Secret(config.secret_key),
                usersig=None,
                rate=rate,
            )
            where = db.describe(settings.database_url)
            accounts = list(graph.accounts)
            yield Demo(sandboxed, server.url, accounts, earlier, where, sandbox, listener)


@contextmanager
def _listener(settings: Settings) -> Iterator[str]:
    """A listener (etl.live) on a free loopback port, in a thread, for the ``with`` block; its
    URL. The first failure of its start is raised here."""
    from etl.live import settings as listening
    from etl.live.server import serve

    checked = listening.listen_settings(settings, host="127.0.0.1", port=0)
    stop, ready = threading.Event(), threading.Event()
    found: list[str] = []
    failed: list[BaseException] = []

    def on_ready(url: str) -> None:
        found.append(url)
        ready.set()

    def run() -> None:
        try:
            with session(settings) as engine:
                serve(engine, checked, stop=stop, ready=on_ready)
        except BaseException as exc:  # noqa: BLE001 (handed to the demo's thread, raised there)
            failed.append(exc)
            ready.set()

    # The listener is a detail of the demo: uvicorn's lines about its start and stop would come
    # between the demo's own (its warnings still show).
    uvicorn_log = logging.getLogger("uvicorn.error")
    level = uvicorn_log.level
    uvicorn_log.setLevel(max(level, logging.WARNING))
    thread = threading.Thread(target=run, name="demo-listener", daemon=True)
    thread.start()
    try:
        ready.wait(_READY_S)
        if failed or not found:
            raise failed[0] if failed else RuntimeError("the demo's listener did not start")
        yield found[0]
    finally:
        stop.set()
        thread.join()
        uvicorn_log.setLevel(level)


def _pair(graph: Graph) -> tuple[str, str, bool]:
    """(account, to_account, mutual): the first account with a fan it does not follow back,
    and that fan; else the first two accounts that follow each other in neither direction."""
    accounts = graph.accounts
    known = set(accounts)
    for account in accounts:
        follows = set(graph.list_ids(account, 2))
        for fan in graph.list_ids(account, 1):
            if fan not in follows and fan in known:
                return account, fan, True
    for account in accounts:
        follows = set(graph.list_ids(account, 2)) | set(graph.list_ids(account, 1))
        for other in accounts:
            if other != account and other not in follows:
                return account, other, False
    raise ValueError("the demo's graph has no pair of accounts to follow")


def summary(
    run_id: int, *, settings: Settings | None = None, env: Mapping[str, str] | None = None
) -> StoreSummary:
    """What the store holds after the demo's run ``run_id``, and what that run changed."""
    with session(settings or settings_from(env)) as engine, engine.connect() as conn:
        return demo_store.summary(conn, run_id)
