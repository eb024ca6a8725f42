"""Benchmark a cold and an unchanged sync of a sandbox graph into a fresh PostgreSQL database.

The sandbox runs as its own process (``python -m etl sandbox``), the sync as another
(``python -m etl sync``), exactly as a user would run them; this script only times them and
reads the database afterwards. Usage::

    python -m bench [--users 2000] [--rate 150] [--pg postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa

from etl.config import database_url
from etl.sandbox import SandboxConfig

DEFAULT_PG = os.environ.get("FOLLOW_ETL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _start_sandbox(users: int, seed: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etl",
            "-q",
            "sandbox",
            "--port",
            "0",
            "--users",
            str(users),
            "--seed",
            str(seed),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.split(" at ", 1)[1].split(";", 1)[0].strip()
    return proc, url


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("IM_", "DATABASE_URL"))}


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Run a CLI command; return wall seconds, CPU seconds, peak RSS (MB) and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "etl", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss // 1024, result.stdout


def main() -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        help="calls/s budget (repeatable; default: 150 and 100000)",
    )
    parser.add_argument("--pg", default=DEFAULT_PG, help="server URL to create databases on")
    args = parser.parse_args()
    rates = args.rate or [150.0, 100000.0]

    server = sa.create_engine(database_url(args.pg), isolation_level="AUTOCOMMIT")
    sandbox, url = _start_sandbox(args.users, args.seed)
    rows = []
    try:
        with urllib.request.urlopen(f"{url}/sandbox/accounts") as answer:  # noqa: S310 (loopback)
            accounts = json.load(answer)["accounts"]
        workdir = Path(tempfile.mkdtemp(prefix="follow-etl-bench-"))
        accounts_file = workdir / "accounts.txt"
        accounts_file.write_text("\n".join(accounts) + "\n")
        config = SandboxConfig()
        for rate in rates:
            name = f"follow_etl_bench_{uuid.uuid4().hex[:10]}"
            with server.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            try:
                target = database_url(args.pg).set(database=name)
                env = {
                    **_clean_env(),
                    "DATABASE_URL": target.render_as_string(hide_password=False),
                    "IM_BASE_URL": url,
                    "IM_SDKAPPID": str(config.sdkappid),
                    "IM_ADMIN": config.admin,
                    "IM_SECRET_KEY": config.secret_key,
                }
                _timed(["migrate"], env)
                for label in ("cold", "unchanged"):
                    job_args = ["sync", "--accounts", str(accounts_file), "--rate", str(rate)]
                    wall, cpu, rss, _ = _timed(job_args, env)
                    status = json.loads(_timed(["status", "--json"], env)[3])["run"]
                    rows.append((label, rate, wall, status["requests"], status["items"], cpu, rss))
            finally:
                with server.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        server.dispose()

    print(
        f"follow-etl bench: sandbox --users {args.users} --seed {args.seed}, PostgreSQL, "
        f"{len(accounts)} accounts x 3 follow types, page size 1000"
    )
    header = (
        "sync",
        "rate/s",
        "wall s",
        "requests",
        "items",
        "calls/s",
        "items/s",
        "CPU ms/call",
        "peak RSS MB",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, rate, wall, requests, items, cpu, rss in rows:
        print(
            f"| {label} | {rate:g} | {wall:.1f} | {requests} | {items} | {requests / wall:.0f} | "
            f"{items / wall:.0f} | {1000 * cpu / max(requests, 1):.2f} | {rss} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
