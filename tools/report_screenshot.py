"""Rebuild docs/report.png: crawl a sandbox graph a few times into a scratch SQLite database,
write the report, and screenshot it in headless Chromium.

    python tools/report_screenshot.py [--users 300] [--runs 4] [--out docs/report.png]

The runs of one invocation happen seconds apart. To show what a nightly job looks like, each
run's timestamps (run, snapshots, edge events) are moved back one day per later run
(``--days-apart 0`` keeps them as they are).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from etl.config import ApiSettings, RetryPolicy, Secret, database_url
from etl.report import build_report
from etl.results import SyncRequest
from etl.sandbox import Graph, Sandbox, SandboxConfig, serve_in_thread
from etl.store import db
from etl.sync import sync
from etl.tencent.client import FollowClient
from etl.tencent.usersig import UserSigSource


def _client(url: str, config: SandboxConfig) -> FollowClient:
    api = ApiSettings(
        sdkappid=config.sdkappid,
        admin=config.admin,
        base_urls=(url,),
        secret_key=Secret(config.secret_key),
        usersig=None,
        rate=2000.0,
        timeout=5.0,
        retry=RetryPolicy(attempts=8, max_seconds=60, initial_wait=0.0, max_wait=0.0),
    )
    source = UserSigSource(
        sdkappid=config.sdkappid,
        identifier=config.admin,
        secret_key=config.secret_key,
        fixed=None,
        clock=time.time,
    )
    return FollowClient(api, source)


def _shift(engine: sa.Engine, run_id: int, days: int) -> None:
    """Move one run's timestamps ``days`` into the past, as if it had run then."""
    delta = timedelta(days=days)
    with engine.begin() as conn:
        for table, column, key in (
            ("sync_runs", "started_at", "id"),
            ("sync_runs", "finished_at", "id"),
            ("profile_snapshots", "first_seen_at", "run_id"),
            ("follow_edge_events", "observed_at", "run_id"),
        ):
            rows = conn.execute(
                sa.text(f"SELECT rowid, {column} FROM {table} WHERE {key} = :run").columns(
                    **{column: sa.DateTime()}
                ),
                {"run": run_id},
            ).all()
            changes = [{"rowid": r, "value": v - delta} for r, v in rows if v is not None]
            if changes:
                conn.execute(
                    sa.text(f"UPDATE {table} SET {column} = :value WHERE rowid = :rowid"), changes
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--days-apart", type=int, default=1)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1820)
    parser.add_argument("--out", default="docs/report.png")
    parser.add_argument("--html", help="also keep the report here")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.error("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as scratch:
        engine = db.make_engine(database_url(f"sqlite:///{scratch}/report.db"))
        db.upgrade(engine)
        graph = Graph(users=args.users, seed=1)
        config = SandboxConfig()
        with serve_in_thread(Sandbox(graph, config)) as server, _client(server.url, config) as c:
            for n in range(1, args.runs + 1):
                if n > 1:
                    graph.mutate(seed=n - 1, delete=1 if n == args.runs else 0)
                report = sync(engine, c, SyncRequest(job="nightly", accounts=graph.accounts))
                print(f"run {report.run_id}: {report.items} items, {report.edges_removed} removed")
        for n in range(1, args.runs + 1):
            _shift(engine, n, (args.runs - n) * args.days_apart)
        html = Path(scratch) / "report.html"
        html.write_text(build_report(engine), encoding="utf-8")
        if args.html:
            shutil.copy(html, args.html)
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={Path(args.out).resolve()}",
                f"--window-size={args.width},{args.height}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"{args.out}: {Path(args.out).stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
