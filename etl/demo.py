"""What ``follow-etl demo`` (``make demo``) runs around its sync: the database migrated, the
sandbox serving a graph that changed once per earlier demo run, and the figures printed after
it (etl.api's ``demo`` and ``demo_summary``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from etl.config import Secret, Settings
from etl.session import session, settings_from
from etl.store import db
from etl.store import demo as demo_store
from etl.store.demo import StoreSummary

JOB = "demo"  # the job every demo run syncs


@dataclass(frozen=True)
class Demo:
    """The demo's sandbox, serving while ``demo``'s block runs, and how to reach it."""

    settings: Settings  # the caller's, with the sandbox's credentials, address and ``rate``
    url: str
    accounts: list[str]  # every account of the sandbox's graph
    earlier: int  # finished demo runs before this one: the graph changed once for each
    database: str  # where the demo stores, as it may be shown (no password)
    job: str = JOB


@contextmanager
def demo(
    users: int = 300,
    *,
    seed: int = 1,
    rate: float = 150.0,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Demo]:
    """Migrate the database, then serve a sandbox graph of ``users`` for the ``with`` block.
    Each demo run sees the graph changed once more than the last (unfollows, new follows,
    profile updates), so a second demo shows removals and new profile versions."""
    from etl.sandbox import Graph, Sandbox, SandboxConfig, serve_in_thread

    settings = settings or settings_from(env)
    config = SandboxConfig()
    graph = Graph(users=users, seed=seed)
    with session(settings, migrated=False) as engine:
        db.upgrade(engine)
        with engine.connect() as conn:
            earlier = demo_store.finished_runs(conn, JOB)
    for generation in range(1, earlier + 1):
        graph.mutate(seed=generation)
    with serve_in_thread(Sandbox(graph, config)) as server:
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
        yield Demo(sandboxed, server.url, list(graph.accounts), earlier, where)


def summary(
    run_id: int, *, settings: Settings | None = None, env: Mapping[str, str] | None = None
) -> StoreSummary:
    """What the store holds after the demo's run ``run_id``, and what that run changed."""
    with session(settings or settings_from(env)) as engine, engine.connect() as conn:
        return demo_store.summary(conn, run_id)
