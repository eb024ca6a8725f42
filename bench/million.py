"""The ``million`` case: one million accounts (three million lists) on a sparse sandbox graph
(``--degree 1``: about 0.8 edges a user), PostgreSQL, an unthrottled budget. Not a whole
night's crawl (three million calls take hours): what scale does to a run's edges in time.

1. start-up: a fresh database, ``migrate``, then ``sync`` of every account: seconds from the
   start to the first follow_get (the sandbox's clock of its first one), peak RSS before it,
   small-list calls/s over a window of the crawl, ``status --json`` latency (and its RSS) while
   the crawl runs, then SIGTERM: seconds to the exit and its code.
2. resume: ``sync`` of the same job again: seconds to the first call, then SIGTERM.
3. SIGTERM in each phase, each in a process of its own, the phase recognised from outside
   (never by sleeping and hoping): ``migrate`` on a fresh database; the accounts check (the
   accounts file open, no run yet); run creation (the run exists, the file read again);
   sizing (follow_get_info calls arriving); ``prune`` of an abandoned run of three million
   checkpoints; ``verify --repair``.
4. the other commands once, to their end: peak RSS and wall time of ``status``, ``verify``,
   ``report``, ``prune`` and a ``worker``.

Targets (issue 15): first call within 60 s of the start, a resumed run's within 15 s; peak
RSS under 300 MB in every phase and command; every SIGTERM honoured within 10 s with exit 143.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.harness import MB, PEAK_RSS_MB, Bench, Row, guarded
from bench.pg import BenchDatabase
from bench.procs import BenchError, Child, Finished, SandboxProcess, run_cli

USERS = 1_000_000
DEGREE = 1.0  # mean accounts a user follows: a sparse graph (the default graph has 12)
FIRST_CALL_S = 60.0
RESUMED_FIRST_CALL_S = 15.0
STOP_S = 10.0
INTERRUPTED = 143  # 128 + SIGTERM
WINDOW_S = 30.0  # of crawl, for calls/s
STATUS_S = 2.0  # status --json while a run of three million lists crawls
PHASE_WAIT_S = 180.0  # seconds to wait for a phase to show before giving up on it
SAMPLE_S = 0.05


@dataclass
class Watch:
    """A child sampled while it runs: its RSS over time, split at the first follow_get."""

    child: Child
    wall_started: float  # time.time() at spawn
    rss_before_call: float = 0.0  # MB, peak VmRSS before the first follow_get
    rss_after_call: float = 0.0
    first_call: float | None = None  # seconds from spawn
    notes: list[str] = field(default_factory=list)

    def sample(self, sandbox: SandboxProcess) -> dict[str, object]:
        """One look: RSS now, and the sandbox's counters; notes the first call."""
        counts: dict[str, object] = sandbox.get("/sandbox/counts")
        rss = _rss_mb(self.child.proc.pid)
        first = counts.get("first_follow_get")
        if self.first_call is None and isinstance(first, float | int):
            self.first_call = float(first) - self.wall_started
        if self.first_call is None:
            self.rss_before_call = max(self.rss_before_call, rss)
        else:
            self.rss_after_call = max(self.rss_after_call, rss)
        return counts


def million(bench: Bench) -> list[Row]:
    """The rows of the million case (see the module docstring)."""
    names = ["million: start-up", "million: resume", "million: SIGTERM", "million: commands"]
    return guarded(names, lambda: _million(bench))


def _million(bench: Bench) -> list[Row]:
    users = bench.plan.million_users
    sandbox = bench.sandbox(users, degree=DEGREE)
    accounts = bench.workdir / "million.txt"
    with accounts.open("w") as out:
        out.writelines(f"user_{i:06d}\n" for i in range(users))
    rate = f"{bench.plan.fast_rate:g}"
    with bench.database() as db:
        env = bench.env(db, sandbox)
        migrated = run_cli(["migrate"], env, bench.workdir, timeout=120)
        sync = ["sync", "--job", "m", "--accounts", str(accounts), "--rate", rate]

        start = Row("million: start-up")
        _crawl_row(bench, db, sandbox, env, sync, start, FIRST_CALL_S, status=True)
        start.details.insert(0, f"migrate {migrated.wall:.1f} s")
        resume = Row("million: resume")
        _crawl_row(bench, db, sandbox, env, sync, resume, RESUMED_FIRST_CALL_S, window=10.0)

        commands = Row("million: commands")
        _commands(bench, env, commands)
        stops = Row("million: SIGTERM")
        _stops(bench, db, sandbox, env, accounts, stops)
    return [start, resume, commands, stops]


def _crawl_row(
    bench: Bench,
    db: BenchDatabase,
    sandbox: SandboxProcess,
    env: dict[str, str],
    args: list[str],
    row: Row,
    first_call_target: float,
    *,
    window: float = WINDOW_S,
    status: bool = False,
) -> None:
    """Start a sync, time its first call, crawl ``window`` seconds (calls/s), SIGTERM it."""
    sandbox.post("/sandbox/reset-stats", {})
    watch = Watch(Child(args, env, bench.workdir), time.time())
    deadline = time.monotonic() + PHASE_WAIT_S
    while watch.first_call is None:
        watch.sample(sandbox)
        if watch.child.exited() or time.monotonic() > deadline:
            done = watch.child.finish(5) if watch.child.exited() else _term(watch.child)[0]
            raise BenchError(f"no follow_get within {PHASE_WAIT_S:.0f} s: {done.last_error()}")
        time.sleep(SAMPLE_S)
    settle_until = time.monotonic() + 5.0  # past the first burst
    while time.monotonic() < settle_until:
        watch.sample(sandbox)
        time.sleep(SAMPLE_S)
    before = watch.sample(sandbox)
    t0 = time.monotonic()
    latencies: list[float] = []
    status_rss = 0.0
    while time.monotonic() - t0 < window:
        if status and len(latencies) < 3 and time.monotonic() - t0 > 5 * (len(latencies) + 1):
            checked = run_cli(["status", "--json", "--job", "m"], env, bench.workdir, 60)
            latencies.append(checked.wall)
            status_rss = max(status_rss, checked.max_rss_mb)
        watch.sample(sandbox)
        time.sleep(0.2)
    after = watch.sample(sandbox)
    seconds = time.monotonic() - t0
    calls = _calls(after) - _calls(before)
    done, stop_s = _term(watch.child)
    row.wall = done.wall
    row.calls = _calls(after)
    row.items = int(after.get("items_served", 0))  # type: ignore[call-overload]
    row.cpu = done.cpu
    row.rss_mb = max(watch.rss_before_call, watch.rss_after_call, done.max_rss_mb)
    first = watch.first_call or 0.0
    row.details += [
        f"first follow_get {first:.1f} s",
        f"{calls / seconds:.0f} calls/s over {seconds:.0f} s of crawl",
        f"RSS before the first call {watch.rss_before_call:.0f} MB, "
        f"crawling {watch.rss_after_call:.0f} MB",
        f"SIGTERM while crawling: exit {done.code} in {stop_s:.1f} s",
    ]
    row.targets += [
        (f"first call <= {first_call_target:.0f} s", first <= first_call_target),
        (f"peak RSS < {PEAK_RSS_MB} MB", row.rss_mb < PEAK_RSS_MB),
        (_stop_target(), stop_s <= STOP_S and done.code == INTERRUPTED),
    ]
    if status:
        worst = max(latencies) if latencies else float("inf")
        row.details.append(
            "status --json during the crawl "
            + ", ".join(f"{s:.2f}" for s in latencies)
            + f" s (RSS {status_rss:.0f} MB)"
        )
        row.targets.append((f"status --json <= {STATUS_S:.0f} s", worst <= STATUS_S))


def _stops(
    bench: Bench,
    db: BenchDatabase,
    sandbox: SandboxProcess,
    env: dict[str, str],
    accounts: Path,
    row: Row,
) -> None:
    """SIGTERM in each phase, each phase recognised from outside before the signal."""
    rate = f"{bench.plan.fast_rate:g}"
    results: list[tuple[str, Finished | None, float]] = []

    def stop_when(
        phase: str, args: list[str], ready: Callable[[Child], bool], where: dict[str, str] = env
    ) -> None:
        sandbox.post("/sandbox/reset-stats", {})
        child = Child(args, where, bench.workdir)
        deadline = time.monotonic() + PHASE_WAIT_S
        while not ready(child):
            if child.exited() or time.monotonic() > deadline:
                done = child.finish(5) if child.exited() else _term(child)[0]
                row.details.append(f"{phase}: not seen ({done.last_error()[:80]})")
                results.append((phase, None, 0.0))
                return
            time.sleep(0.01)
        done, seconds = _term(child)
        results.append((phase, done, seconds))

    with bench.database() as fresh:
        fresh_env = bench.env(fresh, sandbox)
        # A migration runs in one transaction: seen as a session in the database with one open.
        stop_when("migrate", ["migrate"], lambda c: _in_transaction(fresh), fresh_env)

    def checking(child: Child) -> bool:
        return _reading(child, accounts) and not db.run_is_running("m2")

    sync2 = ["sync", "--job", "m2", "--accounts", str(accounts), "--rate", rate]
    stop_when("accounts check", sync2, checking)

    def listing(child: Child) -> bool:
        return db.run_is_running("m2") and _reading(child, accounts)

    stop_when("run creation", sync2, listing)

    def sizing(child: Child) -> bool:
        counts = sandbox.get("/sandbox/counts")
        return int(counts["by_route"].get("/v4/follow/follow_get_info", 0)) > 20

    stop_when("sizing", sync2, sizing)

    # Changes for verify to find, so that --repair crawls: signalled once its crawl is under way.
    sandbox.post("/sandbox/mutate", {"seed": 1})
    repair = ["verify", "--job", "m", "--repair"]
    stop_when("verify --repair", repair, lambda c: _calls(sandbox.get("/sandbox/counts")) > 20)

    # An abandoned run of three million checkpoints to prune: `sync --restart` abandons the
    # first job's run and starts another, stopped as soon as it exists.
    restart = ["sync", "--job", "m", "--accounts", str(accounts), "--rate", rate, "--restart"]
    stop_when("restart", restart, lambda c: len(_run_ids(db, "m")) >= 2)
    results.pop()  # only the means to the prune case
    abandoned = _checkpoints(db, _run_ids(db, "m")[0])
    row.details.append(f"abandoned run to prune: {abandoned:,} checkpoints")
    prune = ["prune", "--job", "m", "--keep-runs", "1"]
    first = _run_ids(db, "m")[0]
    stop_when("prune", prune, lambda c: _checkpoints(db, first) < abandoned)

    worst = 0.0
    for phase, done, seconds in results:
        if done is None:
            continue
        row.details.append(f"{phase}: exit {done.code} in {seconds:.1f} s")
        worst = max(worst, seconds)
        ok = seconds <= STOP_S and done.code == INTERRUPTED
        row.targets.append((f"{phase}: {_stop_target()}", ok))
        row.rss_mb = max(row.rss_mb or 0.0, done.max_rss_mb)
    row.wall = worst
    row.targets.append((f"peak RSS < {PEAK_RSS_MB} MB", (row.rss_mb or 0) < PEAK_RSS_MB))


def _commands(bench: Bench, env: dict[str, str], row: Row) -> None:
    """Each other command once, to its end (a worker: 20 s of crawl): peak RSS, wall time."""
    commands = [
        ["status", "--json", "--job", "m"],
        ["verify", "--job", "m"],
        ["report", "--out", str(bench.workdir / "million.html"), "--job", "m"],
        ["prune", "--job", "m", "--keep-runs", "1"],
        ["worker", "--job", "m"],
    ]
    worst = 0.0
    for args in commands:
        child = Child(args, env, bench.workdir)
        if args[0] == "worker":
            time.sleep(20.0)  # a worker crawls until the run ends: 20 s of it
            done, _ = _term(child)
        else:
            done = child.finish(600)
        worst = max(worst, done.max_rss_mb)
        row.details.append(
            f"{args[0]}: exit {done.code}, {done.wall:.1f} s, {done.max_rss_mb:.0f} MB"
        )
    row.rss_mb = worst
    row.targets.append((f"peak RSS < {PEAK_RSS_MB} MB", worst < PEAK_RSS_MB))


# ---- looking from outside -----------------------------------------------------------------


def _term(child: Child) -> tuple[Finished, float]:
    """SIGTERM the child; (how it ended, seconds from the signal to its exit)."""
    signalled = time.perf_counter()
    if not child.exited():
        child.proc.send_signal(signal.SIGTERM)
    done = child.finish(signalled - child.started + STOP_S * 6)  # finish counts from the start
    return done, max(0.0, done.ended - signalled)


def _stop_target() -> str:
    return f"SIGTERM: exit {INTERRUPTED} within {STOP_S:.0f} s"


def _calls(counts: dict[str, object]) -> int:
    routes = counts.get("by_route")
    return int(routes.get("/v4/follow/follow_get", 0)) if isinstance(routes, dict) else 0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / MB
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _reading(child: Child, path: Path) -> bool:
    """True while the child has ``path`` open and is not at its end."""
    size = path.stat().st_size
    fds = Path(f"/proc/{child.proc.pid}/fd")
    try:
        for fd in fds.iterdir():
            try:
                if os.readlink(fd) != str(path):
                    continue
                pos = int((fds.parent / "fdinfo" / fd.name).read_text().split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if 0 < pos < size:
                return True
    except OSError:
        return False
    return False


def _query(db: BenchDatabase, sql: str, **params: object) -> object:
    with db.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _in_transaction(db: BenchDatabase) -> bool:
    """True while another session of the database has a transaction open."""
    found = _query(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
    )
    return bool(found)


def _run_ids(db: BenchDatabase, job: str) -> list[int]:
    with db.engine.connect() as conn:
        query = sa.text("SELECT id FROM sync_runs WHERE job = :job ORDER BY id")
        return [int(i) for i in conn.execute(query, {"job": job}).scalars()]


def _checkpoints(db: BenchDatabase, run_id: int) -> int:
    found = _query(db, "SELECT count(*) FROM sync_checkpoints WHERE run_id = :r", r=run_id)
    return int(found or 0)  # type: ignore[call-overload,no-any-return]
