"""The history case: does a sync cost the same when the database holds a long past?

Two databases, each fresh and migrated (``python -m etl migrate``):

- an empty one;
- one that first gets, in SQL (``INSERT ... SELECT FROM generate_series``, in chunks):
  ``Plan.history_runs`` finished runs (status done) of another job, ``history-nightly``, with
  ``Plan.history_lists`` checkpoints each (status done, one page, a few items, cursor '',
  expected_items as big as items): ``history_lists / 3`` accounts ``hist_NNNNNN`` x 3 types;
  a follow_lists row per such list; and ``Plan.history_events`` follow_edge_events of those
  accounts (two thirds added, a third removed), spread over ``Plan.history_days`` days. The
  secondary indexes of follow_edge_events are dropped for the load and built again from their
  own definitions (``pg_indexes``) afterwards, foreign-key triggers are off
  (``session_replication_role = replica``) while it loads, then ``VACUUM (ANALYZE)`` and a
  ``CHECKPOINT``: the state of a database whose past autovacuum has already visited, with
  nothing left over to slow the measured sync.

On each, the small-list case's sync (same sandbox, same accounts, job ``bench-history``) runs,
then ``status --json --job bench-history`` (best of three: it is mostly interpreter start).
Targets: the sync's wall time and status's within ``HISTORY_RATIO`` of the empty database's; a
one-account ``daily_follow_changes`` query (``EXPLAIN (FORMAT JSON)``) reads follow_edge_events
through an index and never scans it whole. The details carry what issue 11 measured: index
scans and index entries read (``pg_stat_user_indexes``) on sync_checkpoints' indexes during the
sync, with and without the history.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bench.harness import (
    HISTORY_RATIO,
    Bench,
    Row,
    check_truth,
    fill,
    guarded,
    rss_target,
    sandbox_after,
    sandbox_before,
    sync_args,
)
from bench.pg import BenchDatabase
from bench.procs import SandboxProcess, run_cli

SYNC_TIMEOUT = 900.0
JOB = "bench-history"
OTHER_JOB = "history-nightly"
EVENT_CHUNK = 1_000_000  # follow_edge_events rows per INSERT
INDEXED_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Heap Scan")


@dataclass(frozen=True)
class Measured:
    """One database's sync row, its status time and its sync_checkpoints index reads."""

    row: Row
    status_s: float
    index_reads: dict[str, tuple[int, int]]  # index -> (scans, entries read) during the sync


def history(bench: Bench) -> list[Row]:
    """The small-list sync and status, on an empty database and on one with a long history."""
    plan = bench.plan
    empty_name = f"history: baseline, empty database, {JOB} sync + status"
    full_name = (
        f"history: {plan.history_runs} runs x {plan.history_lists:,} lists + "
        f"{plan.history_events / 1e6:g}M events, same sync + status"
    )

    def run() -> list[Row]:
        sandbox = bench.sandbox(plan.small_users)
        accounts: list[str] = sandbox.get("/sandbox/accounts")["accounts"][: plan.small_accounts]
        with bench.database() as db:
            bench.migrate(db, sandbox)
            empty = _measure(bench, db, sandbox, accounts, Row(empty_name))
        with bench.database() as db:
            bench.migrate(db, sandbox)
            generated, seconds = _generate(db, bench)
            full = _measure(bench, db, sandbox, accounts, Row(full_name))
            plan_nodes, indexed = _daily_changes_plan(db)
        base = empty.row
        base.details[:0] = [
            f"status --json {empty.status_s:.2f} s (best of 3)",
            "sync_checkpoints index reads during the sync: " + _reads(empty.index_reads),
        ]
        base.targets = [rss_target(base.rss_mb), _truth_target(base)]
        row = full.row
        sync_ratio = (row.wall or 0.0) / base.wall if base.wall else float("inf")
        status_ratio = full.status_s / empty.status_s if empty.status_s else float("inf")
        row.details[:0] = [
            f"generated {generated} in {seconds:.0f} s",
            f"sync {sync_ratio:.2f} x the empty database's ({row.wall or 0:.1f} vs "
            f"{base.wall or 0:.1f} s)",
            f"status --json {full.status_s:.2f} s (best of 3) = {status_ratio:.2f} x",
            "sync_checkpoints index reads during the sync: " + _reads(full.index_reads),
            f"one-account daily_follow_changes plan: {plan_nodes}",
        ]
        row.targets = [
            (f"sync <= {HISTORY_RATIO:g} x empty database", sync_ratio <= HISTORY_RATIO),
            (f"status <= {HISTORY_RATIO:g} x empty database", status_ratio <= HISTORY_RATIO),
            ("daily_follow_changes index-driven", indexed),
            rss_target(row.rss_mb),
            _truth_target(row),
        ]
        return [base, row]

    return guarded([empty_name, full_name], run)


def _truth_target(row: Row) -> tuple[str, bool]:
    return "edges = truth", row.truth.startswith("OK")


def _reads(reads: dict[str, tuple[int, int]]) -> str:
    shown = [
        f"{name} {scans:,} scans / {entries:,} entries" for name, (scans, entries) in reads.items()
    ]
    return ", ".join(shown) or "-"


def _measure(
    bench: Bench, db: BenchDatabase, sandbox: SandboxProcess, accounts: list[str], row: Row
) -> Measured:
    """The small-list sync on this database, then status --json three times."""
    path = bench.accounts_file("history", accounts)
    env = bench.env(db, sandbox)
    reads_before = _index_reads(db)
    before = sandbox_before(bench, sandbox)
    done = run_cli(sync_args(JOB, path, bench.plan.fast_rate), env, bench.workdir, SYNC_TIMEOUT)
    fill(row, done, sandbox_after(bench, db, sandbox, before))
    reads_after = _index_reads(db)
    reads = {
        name: (scans - reads_before.get(name, (0, 0))[0], read - reads_before.get(name, (0, 0))[1])
        for name, (scans, read) in reads_after.items()
    }
    status = [
        run_cli(["status", "--json", "--job", JOB], env, bench.workdir, 120).wall for _ in range(3)
    ]
    row.truth = check_truth(db, sandbox, accounts, [1, 2, 3])
    return Measured(row, min(status), reads)


def _index_reads(db: BenchDatabase) -> dict[str, tuple[int, int]]:
    """(idx_scan, idx_tup_read) of each sync_checkpoints index, once other sessions ended."""
    db.settle()
    with db.engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        rows = conn.execute(
            sa.text(
                "SELECT indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes "
                "WHERE relname = 'sync_checkpoints' ORDER BY indexrelname"
            )
        ).all()
    return {str(name): (int(scans), int(read)) for name, scans, read in rows}


# ---- the past, generated -------------------------------------------------------------------


def _generate(db: BenchDatabase, bench: Bench) -> tuple[str, float]:
    """Fill the database with another job's history; (what was made, seconds it took)."""
    plan = bench.plan
    started = time.monotonic()
    accounts = max(1, plan.history_lists // 3)
    lists = accounts * 3
    with db.engine.connect() as conn:
        conn.execute(sa.text("SET session_replication_role = replica"))  # no FK triggers
        conn.execute(sa.text("SET synchronous_commit = off"))
        conn.execute(sa.text("SET maintenance_work_mem = '256MB'"))
        run_ids = [
            int(
                conn.execute(
                    _RUN, {"job": OTHER_JOB, "ago": plan.history_runs - k, "lists": lists}
                ).scalar_one()
            )
            for k in range(plan.history_runs)
        ]
        for run_id in run_ids:
            conn.execute(_CHECKPOINTS, {"run": run_id, "n": lists})
        _say(f"{len(run_ids)} runs x {lists:,} checkpoints", started)
        conn.execute(_LISTS, {"run": run_ids[0], "n": lists})
        indexes = conn.execute(
            sa.text(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i "
                "WHERE i.tablename = 'follow_edge_events' AND NOT EXISTS ("
                "SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
            )
        ).all()
        for name, _ in indexes:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        first_run, runs = run_ids[0], len(run_ids)
        for start in range(0, plan.history_events, EVENT_CHUNK):
            end = min(start + EVENT_CHUNK, plan.history_events) - 1
            conn.execute(
                _EVENTS,
                {
                    "lo": start,
                    "hi": end,
                    "accounts": accounts,
                    "span": plan.history_days * 86400,
                    "first_run": first_run,
                    "runs": runs,
                },
            )
        _say(f"{plan.history_events:,} events", started)
        for _, definition in indexes:
            conn.execute(sa.text(definition))
        _say("events' indexes", started)
        conn.execute(sa.text("SET session_replication_role = DEFAULT"))
        for table in ("sync_runs", "sync_checkpoints", "follow_lists", "follow_edge_events"):
            conn.execute(sa.text(f"VACUUM (ANALYZE) {table}"))
        conn.execute(sa.text("CHECKPOINT"))
    made = (
        f"{runs} runs x {lists:,} checkpoints of {OTHER_JOB}, {lists:,} follow_lists, "
        f"{plan.history_events:,} events over {plan.history_days} days, vacuumed and analyzed"
    )
    return made, time.monotonic() - started


def _say(what: str, started: float) -> None:
    print(f"  history: {what} at {time.monotonic() - started:.0f} s", flush=True)


_RUN = sa.text(
    "INSERT INTO sync_runs (job, status, started_at, finished_at, options, lists_total, "
    "lists_done, pages, items, requests) "
    "VALUES (:job, 'done', now() - make_interval(days => :ago, hours => 6), "
    "now() - make_interval(days => :ago, hours => 5), "
    """'{"types": [1, 2, 3], "page_size": 1000, "rate": 150.0, "concurrency": 16}', """
    ":lists, :lists, :lists, :lists * 11, :lists) RETURNING id"
)
# Lists of 0..22 items (mean 11, the small graph's), one page each, done an hour into the run.
_CHECKPOINTS = sa.text(
    "INSERT INTO sync_checkpoints (run_id, account, follow_type, cursor, status, pages, items, "
    "restarts, failures, updated_at, seen, expected_items) "
    "SELECT :run, 'hist_' || lpad((g / 3)::text, 6, '0'), 1 + g % 3, '', 'done', 1, "
    "(g * 2654435761) % 23, 0, 0, "
    "r.started_at + make_interval(secs => (g * 40503) % 3600), 0, (g * 2654435761) % 23 "
    "FROM generate_series(0::bigint, :n - 1) AS g, sync_runs r WHERE r.id = :run"
)
_LISTS = sa.text(
    "INSERT INTO follow_lists (account, follow_type, baseline_run_id, baseline_at, items) "
    "SELECT 'hist_' || lpad((g / 3)::text, 6, '0'), 1 + g % 3, :run, r.finished_at, "
    "(g * 2654435761) % 23 "
    "FROM generate_series(0::bigint, :n - 1) AS g, sync_runs r WHERE r.id = :run"
)
# Events of the history accounts, observed at a hashed second of the last `span` seconds.
_EVENTS = sa.text(
    "INSERT INTO follow_edge_events (account, follow_type, to_account, event, observed_at, "
    "run_id) "
    "SELECT 'hist_' || lpad((g % :accounts)::text, 6, '0'), 1 + (g / :accounts) % 3, "
    "'user_' || lpad(((g * 7919) % 1000000)::text, 7, '0'), "
    "CASE WHEN g % 3 = 0 THEN 'removed' ELSE 'added' END, "
    "now() - make_interval(secs => (g * 2654435761) % :span), :first_run + g % :runs "
    "FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g"
)


# ---- the plan of a one-account daily_follow_changes query --------------------------------


def _daily_changes_plan(db: BenchDatabase) -> tuple[str, bool]:
    """(the plan's node types, in order; True when follow_edge_events is read through an
    index and never by a sequential scan)."""
    with db.engine.connect() as conn:
        found = conn.execute(
            sa.text("EXPLAIN (FORMAT JSON) SELECT * FROM daily_follow_changes WHERE account = :a"),
            {"a": "hist_000123"},
        ).scalar_one()
    document = found if isinstance(found, list) else json.loads(found)
    nodes: list[dict[str, Any]] = []
    _walk(document[0]["Plan"], nodes)
    names = []
    indexed = seq = False
    for node in nodes:
        kind = str(node["Node Type"])
        on = node.get("Relation Name") or node.get("Index Name")
        names.append(f"{kind} ({on})" if on else kind)
        if node.get("Relation Name") == "follow_edge_events":
            if kind == "Seq Scan":
                seq = True
            elif kind in INDEXED_SCANS:
                indexed = True
    return " > ".join(names), indexed and not seq


def _walk(node: dict[str, Any], into: list[dict[str, Any]]) -> None:
    into.append(node)
    for child in node.get("Plans", []):
        _walk(child, into)
