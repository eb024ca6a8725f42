"""The benchmark's cases. Each starts from a fresh database, runs the CLI as a user would, and
returns its rows; a case that fails returns rows carrying its error line, and the bench goes on.

- small lists: every account of a 2,000-user graph (about eleven items a list), budget raised
  so the client is the limit: calls/s; then an unchanged re-sync of the same lists (a new run
  of the same job): what it rewrites, its WAL against the cold sync's, and calls/s again.
- big lists: the 200 accounts with most fans of a 20,000-user graph, fans lists (about 660
  items a call): items/s, then an unchanged re-sync of the same lists: what it rewrites.

Each phase measured for WAL starts with a CHECKPOINT: every page it touches then costs its
full-page image once, as in a daily re-sync long after the last checkpoint, and the figure does
not depend on when the server (shared with other benches) last checkpointed. The re-sync rows
give the WAL by relation and record type, in bytes a list (pg_walinspect).
- latency-bound: 50 ms per answer, 200 calls/s budget, one sync process and then a sync plus
  1 and 3 workers: wall time against the floor of calls / budget (follow_get and
  follow_get_info calls: the budget covers both), and the busiest second.
- skewed lists: ``sandbox --big-lists`` plants a few fans lists of 50,000-200,000 synthetic
  fans among 1,500 users' small lists; 50 ms, 200 calls/s: wall time against the floor
  max(calls / budget, the longest list's pages x round trip), the round trip measured before
  the sync (five direct 1000-item calls: the 50 ms latency plus the sandbox's service time).
  The details say when each big list finished (its checkpoint's last write against the run's
  start): a big list started late ends after everything else.
- history (bench.history): the small-list sync and ``status --json`` on a database holding 30
  earlier runs of another job (300,000 lists each) and 10 million events, against the same on
  an empty database; the plan of a one-account daily_follow_changes query.

Every row carries the CPU of the sync process(es), of the PostgreSQL server and of the sandbox
per item, and the sync's peak RSS against PEAK_RSS_MB.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlalchemy as sa

from bench.harness import (
    BIG_ITEMS_PER_S,
    LATENCY_RATIO,
    MB,
    RESYNC_DEAD_SHARE,
    RESYNC_WAL_BIG,
    RESYNC_WAL_SMALL,
    SKEW_RATIO,
    SMALL_CALLS_PER_S,
    WINDOW_OVERSHOOT,
    Bench,
    Row,
    Served,
    check_truth,
    fill,
    guarded,
    measure_round_trip,
    rss_target,
    sandbox_after,
    sandbox_before,
    sync_args,
    wait_for_run,
    write_counts,
)
from bench.pg import BenchDatabase, TableStats, wal_summary
from bench.procs import BenchError, Child, Finished, SandboxProcess, run_cli

SYNC_TIMEOUT = 900.0  # seconds; a sync slower than this is a failed case, not a hung bench


def _truth_target(row: Row) -> tuple[str, bool]:
    return "edges = truth", row.truth.startswith("OK")


def small_lists(bench: Bench) -> list[Row]:
    """Cold sync of every account of the small graph, all three types, budget out of the way;
    then an unchanged re-sync of the same lists."""
    plan = bench.plan
    name = f"small lists: cold, {plan.small_users} users x 3 types"
    again_name = "small lists: unchanged re-sync (a new run)"

    def run() -> list[Row]:
        sandbox = bench.sandbox(plan.small_users)
        accounts = sandbox.get("/sandbox/accounts")["accounts"][: plan.small_accounts]
        path = bench.accounts_file("small", accounts)
        with bench.database() as db:
            bench.migrate(db, sandbox)
            db.checkpoint()
            wal0 = db.wal_mark()
            before = sandbox_before(bench, sandbox)
            args = sync_args("bench-small", path, plan.fast_rate)
            done = run_cli(args, bench.env(db, sandbox), bench.workdir, SYNC_TIMEOUT)
            row = fill(Row(name), done, sandbox_after(bench, db, sandbox, before))
            stats1 = db.table_stats()
            cold_wal, scope = db.wal_bytes(wal0)
            row.truth = check_truth(db, sandbox, accounts, [1, 2, 3])
            row.details[:0] = [
                f"{len(accounts)} accounts, {row.items_per_call:.1f} items/call",
                f"WAL {cold_wal / MB:.1f} MB = {cold_wal / max(3 * len(accounts), 1):.0f} B/list "
                f"({scope})",
            ]
            row.targets = [
                (f"calls/s >= {SMALL_CALLS_PER_S}", row.calls_per_s >= SMALL_CALLS_PER_S),
                rss_target(row.rss_mb),
                _truth_target(row),
            ]
            again = Resync(again_name, accounts, [1, 2, 3], RESYNC_WAL_SMALL)
            resync = _resync(bench, db, sandbox, args, again, stats1, cold_wal)
            resync.targets.insert(
                0, (f"calls/s >= {SMALL_CALLS_PER_S}", resync.calls_per_s >= SMALL_CALLS_PER_S)
            )
        return [row, resync]

    return guarded([name, again_name], run)


def big_lists(bench: Bench) -> list[Row]:
    """Cold sync of the top accounts' fans lists, then an unchanged re-sync of the same."""
    plan = bench.plan
    cold_name = f"big lists: cold, top {plan.big_accounts} by fans of {plan.big_users}, fans"
    again_name = "big lists: unchanged re-sync (a new run)"

    def run() -> list[Row]:
        sandbox = bench.sandbox(plan.big_users)
        top = sandbox.get(f"/sandbox/accounts?top={plan.big_accounts}&by=fans")
        accounts: list[str] = top["accounts"]
        path = bench.accounts_file("big", accounts)
        args = sync_args("bench-big", path, plan.fast_rate, types="fans")
        rows = []
        with bench.database() as db:
            bench.migrate(db, sandbox)
            env = bench.env(db, sandbox)
            db.checkpoint()
            wal0 = db.wal_mark()
            before = sandbox_before(bench, sandbox)
            done = run_cli(args, env, bench.workdir, SYNC_TIMEOUT)
            cold = fill(Row(cold_name), done, sandbox_after(bench, db, sandbox, before))
            stats1 = db.table_stats()
            cold_wal, scope = db.wal_bytes(wal0)
            cold.truth = check_truth(db, sandbox, accounts, [1])
            rows_now = sum(s.live for s in stats1.values())
            cold.details[:0] = [
                f"{cold.items_per_call:.0f} items/call",
                f"{rows_now} rows, WAL {cold_wal / MB:.0f} MB ({scope})",
            ]
            cold.targets = [
                (f"items/s >= {BIG_ITEMS_PER_S}", cold.items_per_s >= BIG_ITEMS_PER_S),
                rss_target(cold.rss_mb),
                _truth_target(cold),
            ]
            rows.append(cold)
            again = Resync(again_name, accounts, [1], RESYNC_WAL_BIG)
            rows.append(_resync(bench, db, sandbox, args, again, stats1, cold_wal))
        return rows

    return guarded([cold_name, again_name], run)


@dataclass(frozen=True)
class Resync:
    """An unchanged re-sync row: its name, its lists, its WAL limit (share of the cold's)."""

    name: str
    accounts: list[str]
    types: list[int]
    wal_limit: float


def _resync(
    bench: Bench,
    db: BenchDatabase,
    sandbox: SandboxProcess,
    args: list[str],
    again: Resync,
    stats_before: dict[str, TableStats],
    cold_wal: int,
) -> Row:
    """The same sync again, nothing changed in between: a new run that should write nothing."""
    row = Row(again.name)
    lists = len(again.accounts) * len(again.types)
    try:
        db.checkpoint()
        checkpoints = db.checkpoints()
        wal1 = db.wal_mark()
        before = sandbox_before(bench, sandbox)
        done = run_cli(args, bench.env(db, sandbox), bench.workdir, SYNC_TIMEOUT)
        fill(row, done, sandbox_after(bench, db, sandbox, before))
        stats2 = db.table_stats()
        wal, scope = db.wal_bytes(wal1)
        checkpoints = db.checkpoints() - checkpoints
        parts = db.wal_by_relation(wal1)
        breakdown = wal_summary(parts, lists)
        images = sum(p.fpi for p in parts)
        row.truth = check_truth(db, sandbox, again.accounts, again.types)
    except (BenchError, sa.exc.SQLAlchemyError, OSError) as exc:
        row.error = str(exc).strip().splitlines()[0][:300]
        return row
    rewritten, dead = write_counts(stats_before, stats2)
    live = sum(s.live for s in stats2.values())
    dead_share, wal_share = dead / max(live, 1), wal / max(cold_wal, 1)
    row.details[:0] = [
        f"{rewritten} rows rewritten",
        f"dead tuples +{dead} = {dead_share:.2%} of {live} rows",
        f"WAL {wal / MB:.2f} MB = {wal_share:.2%} of cold = {wal / max(lists, 1):.0f} B/list "
        f"({scope}); without full-page images {(wal - images) / max(cold_wal, 1):.2%} of cold "
        f"= {(wal - images) / max(lists, 1):.0f} B/list",
        *breakdown,
    ]
    if checkpoints:
        row.details.append(
            f"{checkpoints} server checkpoint(s) during the re-sync: their full-page images count"
        )
    row.targets = [
        (f"dead tuples < {RESYNC_DEAD_SHARE:.0%}", dead_share < RESYNC_DEAD_SHARE),
        (f"WAL <= {again.wal_limit:.0%} of cold", wal_share <= again.wal_limit),
        rss_target(row.rss_mb),
        _truth_target(row),
    ]
    return row


def latency_bound(bench: Bench) -> list[Row]:
    """The slow-API case with 1, 2 and 4 processes (a sync, then workers joining its run)."""
    plan = bench.plan
    rows: list[Row] = []
    for processes in plan.workers:
        who = "1 process" if processes == 1 else f"sync + {processes - 1} worker(s)"
        name = f"latency-bound: {plan.latency_ms:g} ms, rate {plan.latency_rate:g}, {who}"
        rows += guarded([name], functools.partial(_one_row, bench, processes, name))
    return rows


def _one_row(bench: Bench, processes: int, name: str) -> list[Row]:
    return [_latency_run(bench, processes, name)]


def _latency_run(bench: Bench, processes: int, name: str) -> Row:
    plan = bench.plan
    sandbox = bench.sandbox(plan.small_users, plan.latency_ms)
    accounts = sandbox.get("/sandbox/accounts")["accounts"][: plan.latency_accounts]
    path = bench.accounts_file("latency", accounts)
    job = f"bench-latency-{processes}"
    floor_guess = 3 * len(accounts) / plan.latency_rate
    timeout = 4 * floor_guess + 120
    with bench.database() as db:
        bench.migrate(db, sandbox)
        env = bench.env(db, sandbox)
        before = sandbox_before(bench, sandbox)
        children = [Child(sync_args(job, path, plan.latency_rate), env, bench.workdir)]
        try:
            if processes > 1:
                wait_for_run(db, job, children[0])
                children += [
                    Child(["worker", "--job", job], env, bench.workdir)
                    for _ in range(processes - 1)
                ]
            finished: list[Finished] = [child.finish(timeout) for child in children]
        finally:
            for child in children:
                child.kill()
        failed = [f for f in finished if f.code != 0]
        if failed:
            raise BenchError(failed[0].last_error())
        served = sandbox_after(bench, db, sandbox, before)
        row = fill(Row(name), finished, served)
        row.truth = check_truth(db, sandbox, accounts, [1, 2, 3])
    floor = served.api_calls / plan.latency_rate
    ratio = (row.wall or 0.0) / floor if floor else float("inf")
    row.details[:0] = [
        f"floor {floor:.1f} s ({served.api_calls} calls / {plan.latency_rate:g} per s), "
        f"ratio {ratio:.2f}",
        f"busiest second: {served.max_in_window} calls",
    ]
    row.targets = _paced_targets(row, served, ratio, LATENCY_RATIO, plan.latency_rate)
    return row


def _paced_targets(
    row: Row, served: Served, ratio: float, limit: float, rate: float
) -> list[tuple[str, bool]]:
    """A budget-bound case's targets: wall time against its floor, the busiest second against
    the budget, memory, and the truth."""
    return [
        (f"wall <= {limit:g} x floor", ratio <= limit),
        (
            f"<= {rate * WINDOW_OVERSHOOT:g} calls in any 1 s",
            served.max_in_window <= rate * WINDOW_OVERSHOOT,
        ),
        rss_target(row.rss_mb),
        _truth_target(row),
    ]


def skewed_lists(bench: Bench) -> list[Row]:
    """A few huge fans lists among thousands of small lists, slow API, budget the limit: does
    the tail end on time (the biggest lists started first)?"""
    plan = bench.plan
    sizes = plan.skew_big
    name = (
        f"skewed lists: {len(sizes)} lists of {min(sizes):,}-{max(sizes):,} items among "
        f"{plan.skew_users} users x 3 types, {plan.latency_ms:g} ms, rate {plan.latency_rate:g}"
    )

    def run() -> list[Row]:
        sandbox = bench.sandbox(plan.skew_users, plan.latency_ms, sizes)
        accounts: list[str] = sandbox.get("/sandbox/accounts")["accounts"]
        top = sandbox.get(f"/sandbox/accounts?top={len(sizes)}&by=fans")
        big: list[str] = top["accounts"]
        longest, longest_items = big[0], int(top["counts"][0])
        round_trip, service = measure_round_trip(sandbox, longest, plan.latency_ms)
        path = bench.accounts_file("skewed", accounts)
        job = "bench-skewed"
        timeout = 4 * (3 * len(accounts) + sum(sizes) / 1000) / plan.latency_rate + 120
        with bench.database() as db:
            bench.migrate(db, sandbox)
            before = sandbox_before(bench, sandbox)
            args = sync_args(job, path, plan.latency_rate)
            done = run_cli(args, bench.env(db, sandbox), bench.workdir, timeout)
            served = sandbox_after(bench, db, sandbox, before)
            row = fill(Row(name), done, served)
            finished = db.lists_finished(job, [(a, 1) for a in big])
            run_seconds = db.run_seconds(job)
            row.truth = check_truth(db, sandbox, accounts, [1, 2, 3])
        pages = served.list_calls.get(f"{longest}/1", -(-longest_items // 1000))
        by_budget = served.api_calls / plan.latency_rate
        by_tail = pages * round_trip
        floor = max(by_budget, by_tail)
        ratio = (row.wall or 0.0) / floor if floor else float("inf")
        done_at = [finished.get((a, 1)) for a in big]
        row.details[:0] = [
            f"floor {floor:.1f} s = max({served.api_calls} calls / {plan.latency_rate:g} per s "
            f"= {by_budget:.1f} s, longest list {pages} pages x {1000 * round_trip:.1f} ms "
            f"= {by_tail:.1f} s), ratio {ratio:.2f}",
            f"round trip: median of 5 direct 1000-item calls ({plan.latency_ms:g} ms latency + "
            f"{1000 * service:.1f} ms service)",
            f"longest list ({longest_items:,} items) done {_seconds(done_at[0])} into the run"
            + (f" of {run_seconds:.1f} s" if run_seconds is not None else ""),
            "big lists, biggest first, done at " + ", ".join(_seconds(t) for t in done_at),
            f"busiest second: {served.max_in_window} calls",
        ]
        row.targets = _paced_targets(row, served, ratio, SKEW_RATIO, plan.latency_rate)
        return [row]

    return guarded([name], run)


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"
