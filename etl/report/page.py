"""The HTML report: headline numbers, five charts and the latest runs, in one self-contained file.

``collect`` asks the database for aggregates only (the views of migration 0002 and the run
tables), never for edges one by one; ``render`` turns them into HTML with inline CSS and inline
SVG (etl.charts), so the file opens anywhere without a network. Neither writes files or prints.
``store_summary`` reads the few figures ``demo`` prints after its run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from html import escape

import sqlalchemy as sa

from etl import __version__
from etl.report import charts
from etl.store.schema import follow_edge_events, follow_edges, profile_snapshots, sync_runs
from etl.tencent.page import TYPE_NAMES

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


def store_summary(conn: sa.Connection, run_id: int) -> StoreSummary:
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
    return StoreSummary(
        accounts=int(accounts),
        edges=_current_edges(conn),
        profiles=int(users),
        snapshots=int(snapshots),
        added=int(events.get("added", 0)),
        removed=int(events.get("removed", 0)),
    )


def build_report(bind: sa.Engine | sa.Connection, job: str | None = None) -> str:
    """The report of the database behind ``bind``, as one HTML document."""
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn:
            return render(collect(conn, job))
    return render(collect(bind, job))


# --- rendering ---------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "\u2013"


def _figure(
    chart_id: str, title: str, note: str, body: str | None, empty: str, wide: bool = False
) -> str:
    """A chart card; without data, a panel that says so (same id, so the layout holds)."""
    content = body or (
        f'<div class="empty"><strong>No data yet</strong><span>{escape(empty)}</span></div>'
    )
    return (
        f'<figure class="card{" wide" if wide else ""}" id="chart-{chart_id}" '
        f'data-chart="{chart_id}" '
        f'data-empty="{"false" if body else "true"}">'
        f"<figcaption><h2>{escape(title)}</h2><p>{escape(note)}</p></figcaption>{content}</figure>"
    )


# Each chart's card: id (also data-chart), title, note, what its empty panel says, full width.
FIGURES: tuple[tuple[Callable[[ReportData], str | None], str, str, str, str, bool], ...] = (
    (
        charts.fans_distribution,
        "fans-distribution",
        "Follower-count distribution",
        "Crawled accounts by their current number of fans",
        "No account has been crawled. Run follow-etl sync to crawl some.",
        False,
    ),
    (
        charts.top_accounts,
        "top-accounts",
        f"Top {TOP_ACCOUNTS} accounts by fans",
        "Current fans; hover a bar for nickname, follows and mutual follows",
        "No crawled account has fans yet.",
        False,
    ),
    (
        charts.daily_follow_changes,
        "daily-follow-changes",
        "Follows gained and lost per day",
        "New and vanished fans of the crawled accounts{scope}, counted once a list has had a "
        "complete first crawl",
        "Changes appear from the second complete crawl of a list onward.",
        True,
    ),
    (
        charts.profile_changes,
        "profile-changes",
        "Profile changes per run",
        "Profiles seen for the first time, and new versions of profiles already on file",
        "No run has stored a profile yet.",
        False,
    ),
    (
        charts.run_durations,
        "run-durations",
        "Run durations",
        f"Finished minus started, the last {RUNS_CHARTED} runs; a running run counts until now",
        "No runs yet. Run follow-etl sync to crawl some.",
        False,
    ),
)
CHART_IDS = tuple(figure[1] for figure in FIGURES)


def _stat(label: str, value: str, note: str) -> str:
    return (
        f'<div class="stat"><span class="label">{escape(label)}</span>'
        f'<span class="value">{escape(value)}</span><span class="note">{escape(note)}</span></div>'
    )


def _summary(data: ReportData) -> str:
    edges = sum(data.edges.values())
    by_type = ", ".join(f"{data.edges.get(t, 0):,} {name}" for t, name in TYPE_NAMES.items())
    last = data.runs[-1] if data.runs else None
    last_note = (
        f"{last.started_at:%Y} UTC \u00b7 run #{last.id} of {last.job}, {last.status}"
        if last
        else "no runs yet"
    )
    jobs = f"of job {data.job}" if data.job else "all jobs"
    return (
        '<section class="stats" id="summary">'
        + _stat("Accounts", f"{data.accounts:,}", f"crawled; {data.profiles:,} profiles on file")
        + _stat("Current edges", f"{edges:,}", by_type)
        + _stat("Runs", f"{data.runs_total:,}", jobs)
        + _stat(
            "Last run", last.started_at.strftime("%b %d, %H:%M") if last else "\u2013", last_note
        )
        + "</section>"
    )


def _runs_table(data: ReportData) -> str:
    now = data.generated_at
    rows = []
    for run in reversed(data.runs[-RUNS_LISTED:]):
        lists = f"{run.lists_done + run.lists_skipped:,}/{run.lists_total:,}"
        if run.lists_failed:
            lists += f" ({run.lists_failed:,} failed)"
        cells = (
            f"#{run.id}",
            run.job,
            f'<span class="pill {escape(run.status)}">{escape(run.status)}</span>',
            _when(run.started_at),
            charts.duration(run.seconds(now)),
            lists,
            f"{run.items:,}",
            f"{run.requests:,}",
            f"{run.edges_removed:,}",
        )
        rows.append(
            "<tr>"
            + "".join(f"<td>{c if i == 2 else escape(c)}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    heads = ("run", "job", "status", "started", "duration", "lists", "items", "requests", "removed")
    head = "".join(f"<th>{h}</th>" for h in heads)
    body = "".join(rows) or f'<tr><td colspan="{len(heads)}" class="none">No runs yet.</td></tr>'
    return (
        '<section class="card wide" id="latest-runs" data-table="latest-runs">'
        f"<figcaption><h2>Latest runs</h2><p>The {RUNS_LISTED} most recent, newest first</p>"
        f"</figcaption><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def render(data: ReportData) -> str:
    """The report as one self-contained HTML document."""
    scope = f"job {data.job}" if data.job else "all jobs"
    scope_note = " (all jobs)" if data.job else ""
    charts_html = "".join(
        _figure(chart_id, title, note.format(scope=scope_note), draw(data), empty, wide)
        for draw, chart_id, title, note, empty, wide in FIGURES
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>follow-etl report</title><style>{STYLE}</style></head><body>"
        '<header class="top"><h1>Follow graph report</h1>'
        f"<p>Generated {_when(data.generated_at)} \u00b7 {escape(scope)} \u00b7 "
        f"{escape(data.dialect)} database</p></header>"
        f'{_summary(data)}<main class="grid">{charts_html}{_runs_table(data)}</main>'
        f"<footer>follow-etl {__version__} \u00b7 one file, no network needed</footer>"
        "</body></html>\n"
    )


STYLE = """
:root{--ink:#1d2330;--muted:#687083;--line:#e7e9ef;--card:#fff;--bg:#f3f5f9}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",
"DejaVu Sans",sans-serif;font-variant-numeric:tabular-nums}
header.top{padding:28px 36px 8px}
h1{margin:0;font-size:26px;letter-spacing:-.01em}
header.top p{margin:4px 0 0;color:var(--muted)}
.stats{display:grid;grid-template-columns:repeat(4,1fr);gap:16px;padding:16px 36px}
.stat{background:var(--card);border-radius:12px;padding:16px 20px;
box-shadow:0 1px 2px rgba(20,30,60,.06),0 4px 14px rgba(20,30,60,.05);display:flex;
flex-direction:column;border-top:3px solid #4f6bed}
.stat .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.06em}
.stat .value{font-size:28px;font-weight:650;margin:2px 0}
.stat .note{color:var(--muted);font-size:12.5px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px;padding:0 36px 16px}
.card{background:var(--card);border-radius:12px;padding:18px 20px 12px;margin:0;
box-shadow:0 1px 2px rgba(20,30,60,.06),0 4px 14px rgba(20,30,60,.05)}
.wide{grid-column:1/-1}
figcaption h2{margin:0;font-size:16px}
figcaption p{margin:2px 0 8px;color:var(--muted);font-size:12.5px}
svg.chart{display:block;width:100%;height:auto;overflow:visible}
svg .tick{font-size:11px;fill:#6b7386}
svg .label{fill:#39404f}
svg .value{font-size:10.5px;fill:#39404f;font-weight:600}
svg .axis-label{font-size:12px;fill:#4b5263}
svg .legend{font-size:11px;fill:#39404f}
svg .grid{stroke:#edf0f4;stroke-width:1}
svg .zero,svg .tickmark{stroke:#b9bfcb;stroke-width:1}
svg .bar:hover{opacity:.8}
svg .cut{stroke:#fff;stroke-width:2.5}
.empty{display:flex;flex-direction:column;align-items:center;justify-content:center;
height:240px;border:1.5px dashed #d5d9e2;border-radius:10px;color:var(--muted);gap:6px;
background:repeating-linear-gradient(135deg,#fafbfc 0 10px,#f5f7fa 10px 20px)}
.empty strong{color:#4b5263;font-size:15px}
table{width:100%;border-collapse:collapse;font-size:13px}
th{text-align:left;color:var(--muted);font-weight:600;font-size:11.5px;text-transform:uppercase;
letter-spacing:.05em;border-bottom:1px solid var(--line);padding:6px 10px}
td{padding:7px 10px;border-bottom:1px solid var(--line)}
td:nth-child(n+5),th:nth-child(n+5){text-align:right}
tr:last-child td{border-bottom:0}
td.none{text-align:center;color:var(--muted)}
.pill{display:inline-block;padding:1px 9px;border-radius:99px;font-size:12px;font-weight:600}
.pill.done{background:#e3f4ec;color:#1f7a52}.pill.running{background:#fdf0dc;color:#9a5c00}
.pill.abandoned{background:#eceef2;color:#5b6272}
footer{padding:4px 36px 28px;color:var(--muted);font-size:12px}
@media (max-width:900px){.grid{grid-template-columns:1fr}.stats{grid-template-columns:1fr 1fr}}
"""
