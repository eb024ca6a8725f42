"""The demo's reads (``follow-etl demo``): how many demo runs came before, what the store holds
after a run and what that run changed (the figures the demo prints last), and whether a live
change has reached the tables."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from etl.store.schema import follow_edge_events, follow_edges, profile_snapshots, sync_runs

# The view of the migrations the demo reads: the edges not marked removed.
current_follow_edges = sa.table(
    "current_follow_edges",
    sa.column("account", sa.String),
    sa.column("follow_type", sa.Integer),
    sa.column("to_account", sa.String),
)


def finished_runs(conn: sa.Connection, job: str) -> int:
    """The job's runs that finished (status ``done``)."""
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(sync_runs.c.job == job, sync_runs.c.status == "done")
        ).scalar_one()
    )


@dataclass(frozen=True)
class StoreSummary:
    """What the store holds after a run, and what that run changed (what ``demo`` prints)."""

    accounts: int  # accounts with edges stored (current or removed)
    edges: dict[int, int]  # current edges by follow type
    profiles: int  # users with a profile snapshot
    snapshots: int  # profile snapshots, all versions
    added: int  # edges the run saw appear (follow_edge_events)
    removed: int  # edges the run saw vanish


def summary(conn: sa.Connection, run_id: int) -> StoreSummary:
    """The figures of :class:`StoreSummary`, for run ``run_id``."""
    e, s, ev = follow_edges.c, profile_snapshots.c, follow_edge_events.c
    accounts = conn.execute(sa.select(sa.func.count(sa.distinct(e.account)))).scalar_one()
    snapshots, users = conn.execute(
        sa.select(sa.func.count(), sa.func.count(sa.distinct(s.user_id))).select_from(
            profile_snapshots
        )
    ).one()
    events: dict[str, int] = dict(
        conn.execute(
            sa.select(ev.event, sa.func.count()).where(ev.run_id == run_id).group_by(ev.event)
        ).all()
    )
    current = current_follow_edges.c.follow_type
    edges = conn.execute(sa.select(current, sa.func.count()).group_by(current)).all()
    return StoreSummary(
        accounts=int(accounts),
        edges={int(follow_type): int(n) for follow_type, n in edges},
        profiles=int(users),
        snapshots=int(snapshots),
        added=int(events.get("added", 0)),
        removed=int(events.get("removed", 0)),
    )


def current_edges(conn: sa.Connection, edges: list[tuple[str, int, str]]) -> int:
    """How many of these (account, follow type, to_account) edges are current."""
    if not edges:
        return 0
    c = current_follow_edges.c
    found = conn.execute(
        sa.select(c.account, c.follow_type, c.to_account).where(
            c.account.in_({account for account, _, _ in edges})
        )
    ).all()
    stored = {(str(a), int(t), str(b)) for a, t, b in found}
    return sum(1 for edge in edges if edge in stored)
