"""The HTML report: headline numbers, five charts, the latest runs and their reconciliation with
the callbacks (live vs crawl), in one self-contained file.

``render`` turns a ``ReportData`` (etl.report.data) into HTML with inline CSS and inline SVG
(etl.report.charts), so the file opens anywhere without a network. It writes no file and
prints nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape

import sqlalchemy as sa

from etl import __version__
from etl.report import charts
from etl.report.data import RUNS_CHARTED, RUNS_LISTED, TOP_ACCOUNTS, ReportData, collect
from etl.report.svg import duration
from etl.tencent.page import TYPE_NAMES


def build_report(bind: sa.Engine | sa.Connection, job: str | None = None) -> str:
    """The report of the database behind ``bind``, as one HTML document."""
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn:
            return render(collect(conn, job))
    return render(collect(bind, job))


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
            duration(run.seconds(now)),
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


def _share(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:.1%}"


def _live_table(data: ReportData) -> str:
    """Per recent run: the callback changes its complete crawls found made (seen live), the
    drift (edges they had to add or remove) and the share seen live."""
    rows = [
        "<tr>"
        + "".join(
            f"<td>{escape(c)}</td>"
            for c in (
                f"#{r.run_id}",
                f"{r.lists:,}",
                f"{r.live:,}",
                f"{r.added:,}",
                f"{r.removed:,}",
                f"{r.drift:,}",
                _share(r.live_share),
            )
        )
        + "</tr>"
        for r in reversed(data.reconciled)
    ]
    heads = ("run", "lists", "seen live", "crawl added", "crawl removed", "drift", "live share")
    head = "".join(f"<th>{h}</th>" for h in heads)
    none = "No run has reconciled callback changes yet: see follow-etl listen."
    body = "".join(rows) or f'<tr><td colspan="{len(heads)}" class="none">{none}</td></tr>'
    return (
        '<section class="card wide" id="live-vs-crawl" data-table="live-vs-crawl">'
        "<figcaption><h2>Live vs crawl</h2><p>Per run of the latest "
        f"{RUNS_LISTED}: callback changes its complete crawls found already made, and the "
        "edges they had to add or remove (drift: what the callbacks missed)</p></figcaption>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
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
        f'{_summary(data)}<main class="grid">{charts_html}{_runs_table(data)}'
        f"{_live_table(data)}</main>"
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
