"""The report's data: aggregates read from the database, never edges one by one.

``collect`` reads the views of migration 0002, the run tables and the view run_reconciliation
(etl.store.reconcile) into a ``ReportData``.
Reads only. (The figures ``demo`` prints after its run are etl.store.demo's.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from etl.store import reconcile
from etl.store.schema import profile_snapshots, sync_runs

RUNS_CHARTED = 30  # runs in the per-run charts
RUNS_LISTED = 10  # runs in the table
TOP_ACCOUNTS = 20
DAYS_CHARTED = 60
LOG2_BINS = 32  # bins up to 2**31 fans, then one more for anything above

# The views of the migrations, as far as the report reads them.
account_follow_counts = sa.table(
    "account_follow_counts",
    sa.column("account", sa.String),
    sa.column("fans", sa.BigInteger),  # SUMs: bigint on PostgreSQL
    sa.column("follows", sa.BigInteger),
    sa.column("mutual", sa.BigInteger),
)
daily_follow_changes = sa.table(
    "daily_follow_changes",
    sa.column("follow_type", sa.Integer),
    sa.column("day"),  # a DATE on PostgreSQL, 'YYYY-MM-DD' text on SQLite
    sa.column("gained", sa.Integer),
    sa.column("lost", sa.Integer),
)
current_follow_edges = sa.table("current_follow_edges", sa.column("follow_type", sa.Integer))
current_profiles = sa.table("current_profiles", sa.column("user_id"), sa.column("nick"))


@dataclass(frozen=True)
class Run:
    """One sync run, as the report shows it."""

    id: int
    job: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    lists_total: int
    lists_done: int
    lists_skipped: int
    lists_failed: int
    items: int
    requests: int
    edges_removed: int

    def seconds(self, now: datetime) -> float:
        """How long it ran; a run still going counts until ``now``."""
        return max(0.0, ((self.finished_at or now) - self.started_at).total_seconds())


RUN_COLUMNS = tuple(f.name for f in fields(Run))


@dataclass(frozen=True)
class TopAccount:
    """An account of the fans ranking."""

    account: str
    nick: str | None
    fans: int
    follows: int
    mutual: int


@dataclass(frozen=True)
class ProfileChanges:
    """Profile snapshots one run stored: users seen for the first time, and new versions."""

    run_id: int
    first_seen: int
    new_versions: int


@dataclass(frozen=True)
class Reconciled:
    """One run's reconciliation with the callbacks (view run_reconciliation): what its complete
    crawls found the callbacks had already done (live), and what they had missed (drift)."""

    run_id: int
    lists: int
    live: int
    added: int
    removed: int
    live_share: float | None  # live / (live + added + removed); None: nothing changed

    @property
    def drift(self) -> int:
        """Edges the crawls had to add or remove."""
        return self.added + self.removed


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, read in one pass."""

    generated_at: datetime
    job: str | None
    dialect: str
    accounts: int
    edges: dict[int, int]  # current edges by follow type
    profiles: int
    runs_total: int
    runs: list[Run]  # the latest RUNS_CHARTED, oldest first
    fan_bins: list[tuple[int, int, int]]  # (lowest fans, highest fans, accounts), log2 bins
    top_accounts: list[TopAccount]
    daily: list[tuple[date, int, int]]  # (UTC day, gained, lost) on the fans lists
    profile_changes: list[ProfileChanges]  # per charted run
    reconciled: list[Reconciled]  # per listed run that reconciled anything, oldest first


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes, which are UTC by the schema's convention."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _run(row: sa.RowMapping) -> Run:
    values = dict(row)
    values.update(started_at=_utc(row["started_at"]), finished_at=_utc(row["finished_at"]))
    return Run(**values)


def _day(value: date | str) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _fan_bins(conn: sa.Connection) -> list[tuple[int, int, int]]:
    """Accounts per log2 bin of their current fan count: 0, 1, 2-3, 4-7, ... (empty bins
    between the first and last included, so the x axis has no holes)."""
    fans = account_follow_counts.c.fans
    bucket = sa.case(*((fans < 2**k, k) for k in range(LOG2_BINS)), else_=LOG2_BINS)
    binned = sa.select(bucket.label("bucket")).select_from(account_follow_counts).subquery()
    rows: dict[int, int] = dict(
        conn.execute(sa.select(binned.c.bucket, sa.func.count()).group_by(binned.c.bucket)).all()
    )
    if not rows:
        return []
    bins = [(0, 0, int(rows.pop(0)))] if 0 in rows else []
    if rows:
        for k in range(min(rows), max(rows) + 1):
            bins.append((2 ** (k - 1), 2**k - 1, int(rows.get(k, 0))))
    return bins


def _top_accounts(conn: sa.Connection) -> list[TopAccount]:
    c, p = account_follow_counts.c, current_profiles.c
    query = (
        sa.select(c.account, p.nick, c.fans, c.follows, c.mutual)
        .select_from(account_follow_counts.outerjoin(current_profiles, p.user_id == c.account))
        .where(c.fans > 0)
        .order_by(c.fans.desc(), c.account)
        .limit(TOP_ACCOUNTS)
    )
    return [TopAccount(a, n, int(f), int(fo), int(m)) for a, n, f, fo, m in conn.execute(query)]


def _daily(conn: sa.Connection) -> list[tuple[date, int, int]]:
    """Edges gained and lost per UTC day on the fans lists, the last DAYS_CHARTED days of data,
    days without events included as zeros."""
    d = daily_follow_changes.c
    rows = conn.execute(
        sa.select(d.day, sa.func.sum(d.gained), sa.func.sum(d.lost))
        .where(d.follow_type == 1)
        .group_by(d.day)
    ).all()
    by_day = {_day(day): (int(gained), int(lost)) for day, gained, lost in rows}
    if not by_day:
        return []
    last = max(by_day)
    first = max(min(by_day), last - timedelta(days=DAYS_CHARTED - 1))
    days = (first + timedelta(days=i) for i in range((last - first).days + 1))
    return [(day, *by_day.get(day, (0, 0))) for day in days]


def _runs(conn: sa.Connection, job: str | None) -> tuple[int, list[Run]]:
    r = sync_runs.c
    where = [r.job == job] if job is not None else []
    total = conn.execute(sa.select(sa.func.count()).select_from(sync_runs).where(*where)).scalar()
    rows = conn.execute(
        sa.select(*(r[name] for name in RUN_COLUMNS))
        .where(*where)
        .order_by(r.id.desc())
        .limit(RUNS_CHARTED)
    ).all()
    runs = [_run(row._mapping) for row in reversed(rows)]
    return int(total or 0), runs


def _profile_changes(conn: sa.Connection, run_ids: Sequence[int]) -> list[ProfileChanges]:
    """Per run: snapshots of users with no lower sequence stored (first seen), and the others
    (a new version of a profile already on file)."""
    if not run_ids:
        return []
    s = profile_snapshots.c
    first = (
        sa.select(s.user_id, sa.func.min(s.profile_sequence).label("seq"))
        .group_by(s.user_id)
        .subquery()
    )
    is_first = sa.case((s.profile_sequence == first.c.seq, 1), else_=0)
    rows = conn.execute(
        sa.select(s.run_id, sa.func.sum(is_first), sa.func.count())
        .join(first, first.c.user_id == s.user_id)
        .where(s.run_id.in_(run_ids))
        .group_by(s.run_id)
    ).all()
    found = {run_id: (int(n_first), int(n - n_first)) for run_id, n_first, n in rows}
    return [ProfileChanges(i, *found.get(i, (0, 0))) for i in run_ids]


def _reconciled(conn: sa.Connection, run_ids: Sequence[int]) -> list[Reconciled]:
    """The reconciliation of these runs (those with any), in their order."""
    found = reconcile.of_runs(conn, list(run_ids))
    return [
        Reconciled(
            run_id,
            f["lists"],
            f["live"],
            f["missed_added"],
            f["missed_removed"],
            f["live_share"],
        )
        for run_id in run_ids
        if (f := found.get(run_id)) is not None
    ]


def _current_edges(conn: sa.Connection) -> dict[int, int]:
    """Current edges by follow type (types without any are missing)."""
    rows = conn.execute(
        sa.select(current_follow_edges.c.follow_type, sa.func.count()).group_by(
            current_follow_edges.c.follow_type
        )
    ).all()
    return {int(follow_type): int(n) for follow_type, n in rows}


def collect(conn: sa.Connection, job: str | None = None, now: datetime | None = None) -> ReportData:
    """Read what the report shows; ``job`` limits the runs (and their charts) to one job."""
    now = now or datetime.now(UTC)
    edges = _current_edges(conn)
    total, runs = _runs(conn, job)
    users = sa.select(sa.func.count(sa.distinct(profile_snapshots.c.user_id)))
    fan_bins = _fan_bins(conn)  # every account falls in one bin: they count the accounts too
    return ReportData(
        generated_at=now,
        job=job,
        dialect=conn.dialect.name,
        accounts=sum(n for _, _, n in fan_bins),
        edges=edges,
        profiles=int(conn.execute(users).scalar() or 0),
        runs_total=total,
        runs=runs,
        fan_bins=fan_bins,
        top_accounts=_top_accounts(conn),
        daily=_daily(conn),
        profile_changes=_profile_changes(conn, [run.id for run in runs]),
        reconciled=_reconciled(conn, [run.id for run in runs[-RUNS_LISTED:]]),
    )
