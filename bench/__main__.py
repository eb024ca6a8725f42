"""Benchmark follow-etl end to end: sandbox and sync as separate processes, fresh PostgreSQL
databases, figures printed next to their targets.

The sandbox runs as ``python -m etl sandbox``, each sync as ``python -m etl sync`` (and
``python -m etl worker``), exactly as a user would run them; this script only starts them,
times them, reads their resource usage and the database, and checks every case's edges against
the sandbox's ground truth. It prints one table and writes it as JSON to ``bench/last.json``
(``bench/last-quick.json`` with ``--quick``; with ``--case``, the rows of the cases not run
stay in that file, marked as earlier). Usage::

    python -m bench [--quick] [--case small|big|latency|skewed|history|million|listen ...]
                    [--pg URL]

The cases, in this order (bench.cases, bench.history and bench.million say more): small lists
(calls/s), big lists (items/s, then an unchanged re-sync), latency-bound (1, 2 and 4 processes
against the floor of calls / budget), skewed lists (a few 50,000-200,000-item lists among
thousands of small ones: wall time against max(calls / budget, the longest list's pages x round
trip)), history (the small-list sync and ``status --json`` on a database holding 30 earlier runs
of another job and 10 million events, against the same on an empty database; the plan of a
one-account ``daily_follow_changes`` query) and million (one million accounts of a sparse
graph: the time to the first call, fresh and resumed, peak RSS per phase and command,
``status --json`` while it crawls, calls/s at that scale, and a SIGTERM in each phase) and listen
(``follow-etl listen`` taking signed callbacks open-loop at 2,100/s: callbacks/s sustained,
acknowledgement latency, peak RSS, the tables against what was acknowledged). Every
row shows the CPU per item of the three parts, the sync process(es), PostgreSQL (its server
processes, from /proc, "-" when unreadable) and the sandbox, and the sync's peak RSS against
its target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.cases import big_lists, latency_bound, skewed_lists, small_lists
from bench.harness import Bench, Plan, Row
from bench.history import history
from bench.listen import listen
from bench.million import million
from bench.pg import PgServer

DEFAULT_PG = os.environ.get("FOLLOW_ETL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CASES = {
    "small": small_lists,
    "big": big_lists,
    "latency": latency_bound,
    "skewed": skewed_lists,
    "history": history,
    "million": million,
    "listen": listen,
}
QUICK = Plan(
    small_accounts=500,
    big_accounts=50,
    latency_accounts=300,
    skew_users=300,
    skew_big=(40_000, 20_000, 10_000),
    history_runs=5,
    history_lists=60_000,
    history_events=1_000_000,
    million_users=100_000,
    listen_seconds=5.0,
)
HEADER = (
    "case",
    "wall s",
    "calls",
    "items",
    "calls/s",
    "items/s",
    "sync CPU ms/call",
    "sync µs/item",
    "PG µs/item",
    "sandbox µs/item",
    "peak RSS MB",
    "edges vs truth",
    "more",
    "targets",
)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _cells(row: Row) -> list[str]:
    if row.error:
        return [row.case, *["-"] * (len(HEADER) - 3), f"error: {row.error}", "FAIL"]
    data = row.as_json()
    targets = "; ".join(f"{text}: {'pass' if ok else 'FAIL'}" for text, ok in row.targets)
    return [
        row.case,
        _number(row.wall, 1),
        _number(row.calls),
        _number(row.items),
        _number(data["calls_per_s"]),
        _number(data["items_per_s"]),
        _number(data["cpu_ms_per_call"], 2),
        _number(data["cpu_us_per_item"], 1),
        _number(data["pg_us_per_item"], 1),
        _number(data["sandbox_us_per_item"], 1),
        _number(row.rss_mb),
        row.truth or "-",
        "; ".join(row.details),
        targets or "-",
    ]


def _table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def _machine() -> dict[str, object]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
        "load_avg_1m_at_start": round(load[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def _with_earlier_rows(document: dict[str, Any], out: Path) -> dict[str, Any]:
    """A ``--case`` run's document, keeping the rows of the cases it did not run from the
    file it replaces (with when and where those were measured), so that one case can be rerun
    without losing the others' figures."""
    try:
        earlier = json.loads(out.read_text())
    except (OSError, ValueError):
        return document
    ran = {row["case"] for row in document["rows"]}
    kept = [row for row in earlier.get("rows", []) if row.get("case") not in ran]
    if not kept:
        return document
    rows = [*kept, *document["rows"]]
    measured = {key: earlier.get(key) for key in ("generated_at", "machine", "quick")}
    return {**document, "rows": rows, "earlier_rows_from": measured, "kept_rows": len(kept)}


def main() -> int:
    """Run the cases, print the table, write the JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller cases (500 small accounts, top 50 big, 300 latency, 300 users and 3 big "
        "lists of 10,000-40,000 skewed, 5 earlier runs of 60,000 lists and 1 million events "
        "of history, 100,000 accounts in the million case, 5 s of listen load): a few minutes",
    )
    parser.add_argument(
        "--case",
        action="append",
        choices=sorted(CASES),
        help="run only this case (repeatable; default: all, in the order small, big, latency, "
        "skewed, history, million, listen)",
    )
    parser.add_argument("--seed", type=int, default=1, help="sandbox graph seed (default 1)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="server URL to create databases on")
    parser.add_argument(
        "--json", type=Path, help="where to write the JSON (default: bench/last.json)"
    )
    args = parser.parse_args()

    plan = dataclasses.replace(QUICK if args.quick else Plan(), seed=args.seed)
    chosen = [name for name in CASES if name in (args.case or CASES)]
    out = args.json or Path(__file__).parent / ("last-quick.json" if args.quick else "last.json")

    server = PgServer(args.pg)
    try:
        machine = {**_machine(), "postgresql": server.version()}
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"bench: cannot use PostgreSQL at {args.pg}: {first}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="follow-etl-bench-"))
    bench = Bench(plan, server, workdir)
    started = time.monotonic()
    print(
        f"follow-etl bench{' --quick' if args.quick else ''}: {machine['cpus']} CPUs "
        f"(load {machine['load_avg_1m_at_start']}), Python {machine['python']}, "
        f"PostgreSQL {machine['postgresql']}, sandbox seed {plan.seed}",
        flush=True,
    )
    pg_cpu = bench.pg_cpu
    print(
        f"  PostgreSQL CPU: the whole server from /proc (postmaster pid {pg_cpu.postmaster})"
        if pg_cpu
        else "  PostgreSQL CPU: not readable here (server elsewhere, or /proc hidden): '-'",
        flush=True,
    )
    rows: list[Row] = []
    try:
        for name in chosen:
            case_started = time.monotonic()
            found = CASES[name](bench)
            rows += found
            for row in found:
                mark = {True: "pass", False: "FAIL", None: "-"}[row.passed]
                detail = f"error: {row.error}" if row.error else row.truth
                print(f"  [{mark}] {row.case}: {detail}", file=sys.stderr, flush=True)
            print(f"  ({name}: {time.monotonic() - case_started:.0f} s)", file=sys.stderr)
    finally:
        bench.close()
        server.dispose()
        shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    print(_table(rows))
    met = sum(1 for row in rows if row.passed)
    print(f"{met} of {len(rows)} rows met every target; bench took {elapsed:.0f} s")
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "plan": dataclasses.asdict(plan),
        "machine": {**machine, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "seconds": round(elapsed, 1),
        "rows": [row.as_json() for row in rows],
    }
    if args.case:
        document = _with_earlier_rows(document, out)
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {out}")
    return 1 if any(row.error for row in rows) else 0  # a missed target is a figure, not an error


if __name__ == "__main__":
    raise SystemExit(main())
