"""The HTML report: its numbers against real syncs of a sandbox graph on SQLite and PostgreSQL,
its empty states, its self-containment, and how it renders in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl.report import CHART_IDS, ReportData, collect, render
from etl.sandbox import Graph, SandboxServer
from etl.store.schema import follow_edge_events, profile_snapshots, sync_runs
from etl.sync import SyncRequest, sync
from tests.conftest import IN_CI, TYPES, api_settings, expected_profiles, make_client

Start = Callable[..., SandboxServer]


def report_of(engine: sa.Engine, **kw: Any) -> tuple[ReportData, str]:
    """The report's data and its HTML."""
    with engine.connect() as conn:
        data = collect(conn, **kw)
    return data, render(data)


def figure(html: str, chart_id: str) -> str:
    """The markup of one chart card."""
    match = re.search(rf'<figure [^>]*data-chart="{chart_id}".*?</figure>', html, re.S)
    assert match, f"no chart {chart_id}"
    return match.group(0)


def assert_self_contained(html: str) -> None:
    """Nothing in the document loads from elsewhere."""
    assert "://" not in html
    assert not re.search(r"<link|<script|<img|<iframe|@import|url\(|\bsrc=", html, re.I)


@pytest.fixture
def two_runs(engine: sa.Engine, running_sandbox: Start) -> dict[str, Any]:
    """A sandbox graph synced, changed, and synced again: what the report should show."""
    graph = Graph(users=60, seed=7)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        request = SyncRequest(job="nightly", accounts=graph.accounts, page_size=50)
        sync(engine, client, request)
        before = graph.truth(graph.accounts, TYPES)
        profiles_before = expected_profiles(graph, before)
        graph.mutate(seed=1)
        sync(engine, client, request)
    after = graph.truth(graph.accounts, TYPES)
    return {
        "graph": graph,
        "before": before,
        "after": after,
        "profiles_before": profiles_before,
        "profiles_after": expected_profiles(graph, after),
    }


def test_report_shows_what_two_real_syncs_stored(engine: sa.Engine, two_runs: Any) -> None:
    """After two syncs with a change between, every chart is drawn from the stored numbers:
    fan counts, the fans ranking, fans gained and lost, profile versions, both runs."""
    graph, before, after = two_runs["graph"], two_runs["before"], two_runs["after"]
    data, html = report_of(engine)

    fans = {account: len(after[(account, 1)]) for account in graph.accounts}
    assert data.accounts == len(graph.accounts)
    assert data.edges == {t: sum(len(after[(a, t)]) for a in graph.accounts) for t in TYPES}
    assert sum(n for _, _, n in data.fan_bins) == len(graph.accounts)
    for lo, hi, n in data.fan_bins:
        assert n == sum(lo <= f <= hi for f in fans.values()), (lo, hi)
    top = min(fans, key=lambda a: (-fans[a], a))  # ties: the smaller id, as the report does
    assert (data.top_accounts[0].account, data.top_accounts[0].fans) == (top, fans[top])
    assert [t.fans for t in data.top_accounts] == sorted(fans.values(), reverse=True)[:20]
    assert f'data-label="{top}" data-value="{fans[top]}"' in figure(html, "top-accounts")

    gained = sum(len(after[(a, 1)].keys() - before[(a, 1)].keys()) for a in graph.accounts)
    lost = sum(len(before[(a, 1)].keys() - after[(a, 1)].keys()) for a in graph.accounts)
    assert gained > 0
    assert lost > 0
    assert sum(g for _, g, _ in data.daily) == gained
    assert sum(lo for _, _, lo in data.daily) == lost

    old, new = two_runs["profiles_before"], two_runs["profiles_after"]
    known_users = {user for user, _ in old}
    added = new.keys() - old.keys()
    first_run, second_run = data.profile_changes
    assert (first_run.first_seen, first_run.new_versions) == (len(old), 0)
    assert second_run.new_versions == sum(user in known_users for user, _ in added) > 0
    assert second_run.first_seen == sum(user not in known_users for user, _ in added)

    assert data.runs_total == 2
    assert [(run.job, run.status) for run in data.runs] == [("nightly", "done")] * 2
    for chart_id in CHART_IDS:
        assert 'data-empty="false"' in figure(html, chart_id)
        assert f'id="{chart_id}-svg"' in html
    assert_self_contained(html)


def test_empty_database_renders_a_no_data_panel_per_chart(engine: sa.Engine) -> None:
    """A migrated database with nothing synced yields a report whose charts all say so."""
    data, html = report_of(engine)
    assert (data.accounts, data.runs_total, data.fan_bins, data.daily) == (0, 0, [], [])
    for chart_id in CHART_IDS:
        card = figure(html, chart_id)
        assert 'data-empty="true"' in card
        assert "No data yet" in card
        assert "<svg" not in card
    assert "No runs yet." in html
    assert_self_contained(html)


def insert_runs(engine: sa.Engine, now: datetime) -> None:
    """Three runs of two jobs three days apart (the last still running), fan events on the first
    and third day only, profile snapshots with hostile text."""
    day = timedelta(days=1)
    runs = [
        (1, "nightly", "done", now - 4 * day, now - 4 * day + timedelta(seconds=40)),
        (2, "adhoc", "abandoned", now - 3 * day, now - 3 * day + timedelta(seconds=5)),
        (3, "nightly", "running", now - 2 * day, None),
    ]
    events = [
        (1, "added", now - 4 * day),
        (1, "added", now - 4 * day),
        (1, "removed", now - 4 * day),
        (2, "added", now - 4 * day),  # a follows list: not in the fans chart
        (1, "removed", now - 2 * day),
    ]
    snapshots = [("u1", 1, 1), ("u2", 1, 1), ("u1", 2, 3), ("u3", 5, 3), ("u3", 4, 3)]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(sync_runs),
            [
                {"id": i, "job": j, "status": s, "started_at": b, "finished_at": f, "options": {}}
                for i, j, s, b, f in runs
            ],
        )
        conn.execute(
            sa.insert(follow_edge_events),
            [
                {
                    "account": "<b>bold</b>",
                    "follow_type": t,
                    "to_account": f"fan{n}",
                    "event": e,
                    "observed_at": at,
                    "run_id": 1,
                }
                for n, (t, e, at) in enumerate(events)
            ],
        )
        conn.execute(
            sa.insert(profile_snapshots),
            [
                {
                    "user_id": user,
                    "profile_sequence": seq,
                    "nick": "<script>alert(1)</script>",
                    "tags": {},
                    "first_seen_at": now,
                    "run_id": run,
                }
                for user, seq, run in snapshots
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO follow_edges (account, follow_type, to_account, first_seen_at) "
                "VALUES ('<b>bold</b>', 1, 'u1', :now), ('<b>bold</b>', 1, 'u2', :now)"
            ),
            {"now": now},
        )


def test_days_runs_and_job_filter_on_inserted_rows(engine: sa.Engine) -> None:
    """Days without events are zeros, a running run counts until now, first-seen profiles are
    told from new versions, --job keeps one job's runs, and stored text is escaped."""
    now = datetime.now(UTC).replace(microsecond=0)
    insert_runs(engine, now)
    data, html = report_of(engine, now=now)
    today = now.date()
    assert data.daily == [
        (today - timedelta(days=4), 2, 1),
        (today - timedelta(days=3), 0, 0),
        (today - timedelta(days=2), 0, 1),
    ]
    assert [(run.id, run.seconds(now)) for run in data.runs] == [
        (1, 40.0),
        (2, 5.0),
        (3, 2 * 86400.0),
    ]
    changes = [(c.run_id, c.first_seen, c.new_versions) for c in data.profile_changes]
    assert changes == [(1, 2, 0), (2, 0, 0), (3, 1, 2)]
    assert data.top_accounts[0].fans == 2
    assert "<script" not in html
    assert "<b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in figure(html, "top-accounts")
    assert 'class="cut"' in figure(html, "run-durations")  # the running run is drawn cut

    nightly, html = report_of(engine, job="nightly", now=now)
    assert (nightly.runs_total, [run.id for run in nightly.runs]) == (2, [1, 3])
    assert [c.run_id for c in nightly.profile_changes] == [1, 3]
    assert "job nightly" in html
    nothing, html = report_of(engine, job="other", now=now)
    assert (nothing.runs_total, nothing.accounts) == (0, 1)
    assert 'data-empty="true"' in figure(html, "run-durations")
    assert 'data-empty="false"' in figure(html, "top-accounts")


# --- the command and the browser ---------------------------------------------------------


def run_cli(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m etl`` in a subprocess against ``database``."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("IM_")}
    env["DATABASE_URL"] = database
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def sqlite_with_runs(tmp_path: Path) -> str:
    """A migrated SQLite database holding the rows of insert_runs."""
    from etl.config import database_url
    from etl.store import db

    url = f"sqlite:///{tmp_path / 'report.db'}"
    engine = db.make_engine(database_url(url))
    db.upgrade(engine)
    insert_runs(engine, datetime.now(UTC))
    engine.dispose()
    return url


def test_report_command_writes_the_file_and_says_so(sqlite_with_runs: str, tmp_path: Path) -> None:
    """`report --out FILE --job NAME` writes the HTML and prints one line."""
    out = tmp_path / "report.html"
    done = run_cli(sqlite_with_runs, "report", "--out", str(out), "--job", "nightly")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"report written to {out}: 1 accounts, 2 current edges, 2 runs (job 'nightly')"
    ]
    html = out.read_text(encoding="utf-8")
    assert all(f'data-chart="{chart_id}"' in html for chart_id in CHART_IDS)


def test_report_command_has_help(tmp_path: Path) -> None:
    """`follow-etl --help` lists report; `report --help` explains --out and --job."""
    database = f"sqlite:///{tmp_path / 'unused.db'}"
    assert "report" in run_cli(database, "--help").stdout
    usage = run_cli(database, "report", "--help").stdout
    assert "--out FILE" in usage
    assert "--job JOB" in usage


@pytest.mark.parametrize(
    ("where", "says"),
    [("missing/report.html", "does not exist"), (".", "is a directory")],
)
def test_report_command_refuses_a_bad_out(
    sqlite_with_runs: str, tmp_path: Path, where: str, says: str
) -> None:
    """An --out in a missing folder, or naming a folder, is a usage error: one line, exit 2."""
    done = run_cli(sqlite_with_runs, "report", "--out", str(tmp_path / where))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert says in done.stderr
    assert done.stderr.startswith("follow-etl: error: --out")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser; skipped locally when missing, a failure under CI=true."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("chromium must be installed under CI=true (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    return path


# Written into a copy of the report: each chart card records the size the browser gave it.
MEASURE = """<script>
for (const card of document.querySelectorAll('[data-chart]')) {
  const box = (card.querySelector('svg') || card).getBoundingClientRect();
  card.setAttribute('data-rendered', Math.round(box.width) + 'x' + Math.round(box.height));
}
</script></body>"""


def browse(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the HTML is the same on both
def test_report_renders_in_headless_chromium(
    engine: sa.Engine, two_runs: Any, chromium: str, tmp_path: Path
) -> None:
    """The report of two real syncs renders: a full-size screenshot with content, and every
    chart laid out at a real size in the rendered DOM."""
    _, html = report_of(engine)
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "report.png"
    browse(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1280, 2400)
    assert len(png) > 60_000  # a blank page of this size is about 15 KB

    measured = tmp_path / "measured.html"
    measured.write_text(html.replace("</body>", MEASURE), encoding="utf-8")
    dom = browse(chromium, tmp_path, "--dump-dom", measured.as_uri()).stdout
    for chart_id in CHART_IDS:
        size = re.search(rf'data-chart="{chart_id}"[^>]*data-rendered="(\d+)x(\d+)"', dom)
        assert size, f"{chart_id} is not in the rendered page"
        width, height = map(int, size.groups())
        assert width > 400, (chart_id, width)
        assert height > 150, (chart_id, height)
