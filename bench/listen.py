"""The listen case: ``follow-etl listen`` against a fresh PostgreSQL database, driven open-loop.

The listener runs as ``python -m etl listen`` (as a user runs it), signed callbacks required
(IM_CALLBACK_TOKEN set), on a database migrated and holding a baseline for every list of the
accounts the load uses (``follow_lists`` rows, so that every change is applied: nothing is
"untracked"). The load (bench.loadgen) is one follow or unfollow per callback among a few
thousand accounts, mutual pairs included, at ``listen_rate`` callbacks/s: ``listen_warmup``
seconds, then ``listen_seconds`` measured.

Figures of the measured window: callbacks/s sustained (the window's callbacks acknowledged,
over the time from the window's start to the last of their acknowledgements), p50 / p99 / max
acknowledgement latency (from when each was due), errors (no 200), the listener's peak RSS
(VmHWM), and its CPU and PostgreSQL's (the whole server's: other databases' work counts too)
in the window, per callback acknowledged. Then SIGTERM: the
listener must exit 0 within 10 s. Then the tables: the callback events and current edges
must be exactly what the acknowledged callbacks imply (bench.loadgen.expected).
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import time
import urllib.request

import sqlalchemy as sa

from bench import loadgen
from bench.harness import Bench, Row, guarded
from bench.pg import BenchDatabase
from bench.procs import BenchError, Child, clean_env, high_water_kb, proc_cpu_seconds, run_cli
from etl.config import Secret
from etl.sandbox import SandboxConfig

LISTEN_CALLBACKS_PER_S = 2000  # the targets
LISTEN_P99_MS = 100.0
LISTEN_EXIT_S = 10.0
TOKEN = "bench-callback-token"
PATH = "/callback"


def listen(bench: Bench) -> list[Row]:
    """The listener at the target rate: sustained callbacks/s, latency, RSS, the tables."""
    plan = bench.plan
    name = (
        f"listen: {plan.listen_rate:,.0f} callbacks/s for {plan.listen_seconds:g} s "
        f"(after {plan.listen_warmup:g} s), {plan.listen_accounts:,} accounts"
    )

    def run() -> list[Row]:
        with bench.database() as db:
            env = _env(db)
            run_cli(["migrate"], env, bench.workdir, timeout=120)
            _keep_lists(db, plan.listen_accounts)
            return [_measure(bench, db, env, name)]

    return guarded([name], run)


def _env(db: BenchDatabase) -> dict[str, str]:
    return {
        **clean_env(),
        "DATABASE_URL": db.env_url,
        "IM_SDKAPPID": str(SandboxConfig().sdkappid),
        "IM_CALLBACK_TOKEN": TOKEN,
    }


def _keep_lists(db: BenchDatabase, accounts: int) -> None:
    """A baseline (crawled an hour ago, empty) for every list of the load's accounts."""
    with db.engine.connect() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO follow_lists "
                "(account, follow_type, baseline_run_id, baseline_at, items, crawled_at) "
                "SELECT 'bench_' || lpad(i::text, 6, '0'), t, 0, "
                "now() - interval '1 hour', 0, now() - interval '1 hour' "
                "FROM generate_series(0, :n - 1) i, generate_series(1, 3) t"
            ),
            {"n": accounts},
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(port: int, child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.exited():
            raise BenchError(child.finish(1).last_error())
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"the listener did not answer /healthz within {timeout:.0f} s")


def _measure(bench: Bench, db: BenchDatabase, env: dict[str, str], name: str) -> Row:
    plan = bench.plan
    port = _free_port()
    args = ["listen", "--host", "127.0.0.1", "--port", str(port), "--path", PATH]
    child = Child(args, env, bench.workdir)
    try:
        _wait_healthy(port, child)
        steps = loadgen.plan(
            plan.listen_rate, plan.listen_warmup + plan.listen_seconds, plan.listen_accounts
        )
        payloads = loadgen.requests(
            steps,
            host="127.0.0.1",
            port=port,
            path=PATH,
            sdkappid=SandboxConfig().sdkappid,
            token=Secret(TOKEN),
            event_ms=int(time.time() * 1000),
        )
        pid, pg = child.proc.pid, bench.pg_cpu
        cpu: dict[str, tuple[float, float | None]] = {}  # CPU at the window's start and end

        def mark(name: str) -> None:
            cpu[name] = (proc_cpu_seconds(pid), pg.seconds() if pg is not None else None)

        window = (plan.listen_warmup, plan.listen_warmup + plan.listen_seconds)
        marks = {window[0]: lambda: mark("start"), window[1]: lambda: mark("end")}
        outcome = loadgen.drive("127.0.0.1", port, payloads, steps, marks=marks)
        rss_mb = high_water_kb(child.proc.pid) / 1024
        stopping = time.perf_counter()
        child.proc.send_signal(signal.SIGTERM)
        while not child.exited() and time.perf_counter() - stopping < LISTEN_EXIT_S + 20:
            time.sleep(0.01)
        done = child.finish(stopping - child.started + LISTEN_EXIT_S + 20)
    finally:
        child.kill()
    (cpu0, pg0), (cpu1, pg1) = cpu["start"], cpu["end"]
    pg_cpu = None if pg0 is None or pg1 is None else pg1 - pg0
    row = Row(name, cpu=cpu1 - cpu0, pg_cpu=pg_cpu, rss_mb=rss_mb)
    _figures(row, plan.listen_warmup, plan.listen_seconds, outcome)
    row.truth = _check_tables(db, steps, outcome)
    exit_s = done.ended - stopping
    row.details.append(f"SIGTERM: exit {done.code} after {exit_s:.1f} s")
    row.targets += [
        (f"exit 0 within {LISTEN_EXIT_S:g} s of SIGTERM", done.code == 0 and exit_s <= 10),
        ("tables = acknowledged", row.truth.startswith("OK")),
    ]
    if done.code != 0:
        row.details.append(done.last_error())
    return row


def _figures(row: Row, warmup: float, seconds: float, outcome: loadgen.Outcome) -> None:
    """Sustained rate, latency and errors of the measured window, into the row."""
    window = [i for i, due in enumerate(outcome.due) if warmup <= due < warmup + seconds]
    acked = [i for i in window if outcome.acked[i] >= 0]
    errors = len(window) - len(acked)
    last = max((outcome.acked[i] for i in acked), default=warmup + seconds)
    row.wall = max(last - warmup, seconds)
    row.calls = row.items = len(acked)
    latencies = sorted(1000 * (outcome.acked[i] - outcome.due[i]) for i in acked)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else p50
    worst = latencies[-1] if latencies else p50
    lag = sorted(1000 * (outcome.sent[i] - outcome.due[i]) for i in window if outcome.sent[i] >= 0)
    statuses: dict[int, int] = {}
    for i in window:
        if outcome.acked[i] < 0:
            statuses[outcome.status[i]] = statuses.get(outcome.status[i], 0) + 1
    sustained = row.calls_per_s
    row.details += [
        f"sustained {sustained:,.0f} callbacks/s ({len(acked):,} of {len(window):,} acknowledged)",
        f"ack latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms",
        f"errors {errors}" + (f" (status: {json.dumps(statuses)})" if statuses else ""),
        f"client send lag p99 {lag[int(0.99 * len(lag))] if lag else float('nan'):.1f} ms",
        f"peak RSS {row.rss_mb or 0:.0f} MB",
    ]
    row.targets = [
        (f"callbacks/s >= {LISTEN_CALLBACKS_PER_S}", sustained >= LISTEN_CALLBACKS_PER_S),
        (f"p99 ack < {LISTEN_P99_MS:g} ms", p99 < LISTEN_P99_MS),
    ]


def _check_tables(db: BenchDatabase, steps: list[loadgen.Step], outcome: loadgen.Outcome) -> str:
    """ "OK ..." when the callback events and current edges are exactly what the plan implies
    (every callback acknowledged, none sent before its pair's previous one was)."""
    unacked = sum(1 for at in outcome.acked if at < 0)
    with db.engine.connect() as conn:
        events = conn.execute(
            sa.text("SELECT count(*) FROM follow_edge_events WHERE source = 'callback'")
        ).scalar_one()
        edges = conn.execute(
            sa.text("SELECT count(*) FROM follow_edges WHERE removed_at IS NULL")
        ).scalar_one()
    want = loadgen.expected(steps)
    found = f"{events:,} callback events, {edges:,} current edges"
    if unacked or outcome.overlaps:
        return (
            f"UNCHECKED: {unacked} callbacks unacknowledged, {outcome.overlaps} sent before "
            f"their pair's previous one was acknowledged; {found}"
        )
    if (events, edges) == (want.events, want.edges):
        return f"OK ({found}, {want.mutual_pairs:,} mutual pairs)"
    return f"MISMATCH: {found}; expected {want.events:,} events, {want.edges:,} edges"
