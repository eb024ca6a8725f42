"""The command line end to end: `python -m etl` in a subprocess, against a real sandbox server
and each supported database, read back with SQL."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.config import database_url
from etl.sandbox import Graph, SandboxConfig, SandboxServer
from etl.store import db
from etl.tencent import usersig
from etl.tencent.info import INFO_BATCH
from tests.conftest import (
    TYPES,
    expected_profiles,
    minimum_requests,
    nonempty,
    stored_lists,
    stored_profiles,
)
from tests.e2e.conftest import (
    assert_one_error_line,
    cli_env,
    etl,
    migrate,
    requests_seen,
    status_json,
    wait_for_requests,
    write_accounts,
)

Start = Callable[..., SandboxServer]
# UserSigs use the base64 alphabet with + / = mapped to * - _ (see etl.usersig).
USERSIG_LIKE = re.compile(r"[A-Za-z0-9*_-]{40,}")


# --- helpers -----------------------------------------------------------------------------


def decodes_as_usersig(token: str) -> bool:
    """True when ``token`` unpacks as a UserSig."""
    try:
        usersig.decode(token)
    except usersig.UserSigRejected:
        return False
    return True


def dump_database(engine: sa.Engine) -> str:
    """Every row of every table and view, as text."""
    inspector = sa.inspect(engine)
    names = inspector.get_table_names() + inspector.get_view_names()
    with engine.connect() as conn:
        return "\n".join(
            repr(tuple(row))
            for name in names
            for row in conn.execute(sa.text(f'SELECT * FROM "{name}"'))
        )


@pytest.fixture
def reader(db_url: URL) -> Iterator[sa.Engine]:
    """An engine on the test database, to read back what the CLI stored (not migrated here)."""
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


# --- migrating -----------------------------------------------------------------------------


def test_migrate_brings_an_empty_database_to_head_once(
    db_url: URL, reader: sa.Engine, tmp_path: Path
) -> None:
    """``migrate`` upgrades an empty database to the newest revision; run again, it says the
    database is already there."""
    env = cli_env(db_url)
    first = etl(env, tmp_path, "migrate")
    assert first.returncode == 0, first.stderr
    assert "migrated from empty" in first.stdout
    assert db.current_revision(reader) == db.head_revision()
    second = etl(env, tmp_path, "migrate")
    assert second.returncode == 0, second.stderr
    assert "already at revision" in second.stdout


# --- resuming after a crash --------------------------------------------------------------


def sync_process(env: dict[str, str], cwd: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m etl sync ARGS`` in the background, its output going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "etl", "sync", *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and reap it; it must not have finished on its own."""
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.slow
def test_sync_killed_three_times_resumes_to_the_exact_result(
    db_url: URL, reader: sa.Engine, running_sandbox: Start, tmp_path: Path
) -> None:
    """A sync SIGKILLed at three points is each time resumed at once by the next one, which
    ends in run 1 with exactly the sandbox's data, having refetched at most the pages that were
    fetched but not yet committed."""
    graph = Graph(users=80, seed=7)
    server = running_sandbox(graph, latency_ms=3)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    concurrency = 2
    args: tuple[str, ...] = ("--accounts", str(accounts), "--page-size", "5", "--rate", "5000")
    args += ("--concurrency", str(concurrency))
    truth = graph.truth(graph.accounts, TYPES)
    minimum = minimum_requests(truth, graph.accounts, 5)
    # Per kill: pages queued for the writer (4 per fetcher), in its batch, and in flight.
    at_risk = 10 * concurrency
    first_request_after: list[float] = []
    startup = 0.0  # how long a fresh process takes to its first requests on this machine now
    for attempt, share in enumerate((0.15, 0.45, 0.75, None)):
        log = tmp_path / f"sync-{attempt}.log"
        proc = sync_process(env, tmp_path, *args, log=log)
        try:
            # +2: the killed process may have left one request in flight
            seen = requests_seen(server)
            waited = wait_for_requests(server, proc, seen + 2)
            if attempt:
                first_request_after.append(waited)
            else:
                startup = waited
            if share is not None:
                wait_for_requests(server, proc, int(minimum * share))
            else:
                assert proc.wait(timeout=60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                kill(proc)
    assert stored_lists(reader) == nonempty(truth)
    assert stored_profiles(reader) == expected_profiles(graph, truth)
    run = status_json(env, tmp_path)["run"]
    assert (run["id"], run["status"]) == (1, "done")
    assert minimum <= requests_seen(server) <= minimum + 3 * at_risk
    # Nothing of the killed process to wait out: its leases would cost their TTL (6 s) on top
    # of starting up (measured against the fresh start, not a fixed time: machines get busy).
    assert max(first_request_after) < startup + 4


# --- the accounts to sync ----------------------------------------------------------------

# Three real accounts among blank lines, comments, duplicates, padding and one that does not exist.
MESSY_ACCOUNTS = (
    "\n# the accounts to crawl\n  user_000001  \nuser_000002\n\n"
    "user_000001\n ghost_user\n#user_000003\n\tuser_000004\t\nuser_000002\nghost_user\n"
)
MESSY_REAL_ACCOUNTS = ["user_000001", "user_000002", "user_000004"]


def test_messy_accounts_file_syncs_each_real_account_once_and_skips_the_missing_one(
    db_url: URL, engine: sa.Engine, running_sandbox: Start, tmp_path: Path
) -> None:
    """Blank lines, comments, duplicates and padding are ignored; an account that does not
    exist is named on stdout (30003) and its three lists are skipped; the real ones are stored
    exactly."""
    graph = Graph(users=30, seed=2)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    accounts = tmp_path / "accounts.txt"
    accounts.write_text(MESSY_ACCOUNTS, encoding="utf-8")
    result = etl(env, tmp_path, "sync", "--accounts", str(accounts))
    assert result.returncode == 0, result.stderr
    [named] = [line for line in result.stdout.splitlines() if "ghost_user" in line]
    assert "30003" in named
    truth = graph.truth(MESSY_REAL_ACCOUNTS, TYPES)
    assert stored_lists(engine) == nonempty(truth)
    assert stored_profiles(engine) == expected_profiles(graph, truth)
    run = status_json(env, tmp_path)["run"]
    assert run["status"] == "done"
    assert (run["lists"]["total"], run["lists"]["done"], run["lists"]["skipped"]) == (12, 9, 3)
    assert {(e["account"], e["status"]) for e in run["errors"]} == {("ghost_user", "skipped")}


def test_accounts_from_stdin(
    db_url: URL, engine: sa.Engine, running_sandbox: Start, tmp_path: Path
) -> None:
    """``--accounts -`` reads the UserIDs from standard input."""
    graph = Graph(users=30, seed=2)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    chosen = ["user_000003", "user_000005"]
    result = etl(env, tmp_path, "sync", "--accounts", "-", stdin="user_000003\nuser_000005\n")
    assert result.returncode == 0, result.stderr
    assert stored_lists(engine) == nonempty(graph.truth(chosen, TYPES))


# --- errors a user can cause -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "accounts_text"),
    [
        pytest.param(("--accounts", "missing.txt"), None, id="missing-accounts-file"),
        pytest.param(
            ("--account", "user_000001", "--page-size", "0"),
            None,
            id="page-size-0",
        ),
        pytest.param(
            ("--account", "user_000001", "--types", "fans,bogus"),
            None,
            id="unknown-type",
        ),
        pytest.param((), None, id="no-accounts"),
        pytest.param(
            ("--account", ""),
            None,
            id="empty-account",
        ),
        pytest.param(
            ("--accounts", "accounts.txt"), "user_000001\nuser 000002\n", id="space-in-account"
        ),
    ],
)
def test_usage_error_is_one_line_exit_2_and_touches_nothing(
    args: tuple[str, ...],
    accounts_text: str | None,
    running_sandbox: Start,
    tmp_path: Path,
) -> None:
    """A usage error exits 2 with one line on stderr, before any database or API is touched."""
    server = running_sandbox(Graph(users=10, seed=1))
    database = tmp_path / "follow.db"
    if accounts_text is not None:
        (tmp_path / "accounts.txt").write_text(accounts_text, encoding="utf-8")
    result = etl(cli_env(f"sqlite:///{database}", server), tmp_path, "sync", *args)
    assert result.returncode == 2
    assert_one_error_line(result)
    assert not database.exists()
    assert requests_seen(server) == 0


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"IM_SDKAPPID": None}, id="sdkappid-missing"),
        pytest.param({"IM_BASE_URL": "http://example.com"}, id="plain-http-off-loopback"),
        pytest.param({"IM_BASE_URL": None, "IM_REGION": "mars"}, id="unknown-region"),
        pytest.param({"DATABASE_URL": "mysql://x"}, id="unsupported-database"),
    ],
)
def test_configuration_error_is_one_line_exit_3(
    overrides: dict[str, str | None], running_sandbox: Start, tmp_path: Path
) -> None:
    """A missing or invalid setting exits 3 with one line on stderr and fetches nothing."""
    server = running_sandbox(Graph(users=10, seed=1))
    database = tmp_path / "follow.db"
    env = cli_env(f"sqlite:///{database}", server, **overrides)
    result = etl(env, tmp_path, "sync", "--account", "user_000001")
    assert result.returncode == 3
    assert_one_error_line(result)
    assert not database.exists()
    assert requests_seen(server) == 0


def test_wrong_secret_key_exits_4_and_keeps_the_earlier_data(
    db_url: URL, engine: sa.Engine, running_sandbox: Start, tmp_path: Path
) -> None:
    """With a wrong secret key sync exits 4 naming 70009 in one line, never prints the key, and
    leaves the data of the earlier run as it was."""
    graph = Graph(users=30, seed=4)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    assert etl(env, tmp_path, "sync", "--accounts", str(accounts)).returncode == 0
    lists_before, profiles_before = stored_lists(engine), stored_profiles(engine)
    wrong = {**env, "IM_SECRET_KEY": "wrong-key"}
    result = etl(wrong, tmp_path, "sync", "--accounts", str(accounts))
    assert result.returncode == 4
    assert "70009" in assert_one_error_line(result)
    assert "wrong-key" not in result.stdout + result.stderr
    assert lists_before == nonempty(graph.truth(graph.accounts, TYPES))
    assert stored_lists(engine) == lists_before
    assert stored_profiles(engine) == profiles_before


@pytest.mark.parametrize(
    "database",
    [
        pytest.param("postgresql://postgres:hunter2@127.0.0.1:1/nope", id="postgresql"),
        pytest.param("sqlite:///{tmp}/no/such/dir/follow.db", id="sqlite"),
    ],
)
def test_unreachable_database_exits_5_in_one_line_without_the_password(
    database: str, running_sandbox: Start, tmp_path: Path
) -> None:
    """A database that cannot be opened makes sync exit 5 with one line that shows no password."""
    server = running_sandbox(Graph(users=10, seed=1))
    env = cli_env(database.format(tmp=tmp_path), server)
    result = etl(env, tmp_path, "sync", "--account", "user_000001")
    assert result.returncode == 5
    assert_one_error_line(result)
    assert "hunter2" not in result.stdout + result.stderr
    assert requests_seen(server) == 0


def test_sync_on_a_database_not_migrated_exits_5_and_says_to_migrate(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """On an empty database sync exits 5 with one line telling to run migrate."""
    server = running_sandbox(Graph(users=10, seed=1))
    result = etl(cli_env(db_url, server), tmp_path, "sync", "--account", "user_000001")
    assert result.returncode == 5
    assert "migrate" in assert_one_error_line(result)
    assert requests_seen(server) == 0


# --- secrets -----------------------------------------------------------------------------


@pytest.mark.slow
def test_debug_sync_through_faults_shows_and_stores_no_secret(
    db_url: URL, engine: sa.Engine, running_sandbox: Start, tmp_path: Path
) -> None:
    """A debug-logged sync through transient faults never shows the secret key or a UserSig,
    and stores neither."""
    graph = Graph(users=25, seed=5)
    kinds = ("30006", "30007", "502", "503", "truncated")
    server = running_sandbox(graph, faults=0.2, fault_kinds=kinds, fault_seed=3)
    env = cli_env(db_url, server)
    secret = server.sandbox.config.secret_key
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    result = etl(env, tmp_path, "-v", "sync", "--accounts", str(accounts), "--page-size", "5")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "retry" in output  # the faults were met and logged
    assert secret not in output
    assert all(rest.startswith("***") for rest in re.split(r"(?i)usersig=", output)[1:])
    assert not [t for t in USERSIG_LIKE.findall(output) if decodes_as_usersig(t)]
    stored = dump_database(engine)
    assert "user_000001" in stored
    assert secret not in stored
    assert not [t for t in USERSIG_LIKE.findall(stored) if decodes_as_usersig(t)]


# --- status ------------------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_status_json_describes_the_finished_run(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """``status --json`` gives the job and its latest run with every documented key, matching
    what the sync did."""
    graph = Graph(users=20, seed=6)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    sync = etl(env, tmp_path, "sync", "--job", "nightly", "--accounts", str(accounts),
               "--page-size", "4")  # fmt: skip
    assert sync.returncode == 0, sync.stderr
    doc = status_json(env, tmp_path, job="nightly")
    assert set(doc) == {"job", "run"}
    assert doc["job"] == "nightly"
    run = doc["run"]
    assert set(run) == {
        "id", "status", "listed", "started_at", "finished_at", "last_activity", "options", "lists",
        "pages", "items", "requests", "edges_removed", "errors", "quarantined", "held",
        "reconciliation", "workers",
    }  # fmt: skip
    truth = graph.truth(graph.accounts, TYPES)
    lists = 3 * len(graph.accounts)
    assert run["lists"] == {
        "total": lists, "done": lists, "skipped": 0, "failed": 0, "held": 0, "running": 0,
        "pending": 0, "open": 0,
    }  # fmt: skip
    assert (run["id"], run["status"], run["listed"]) == (1, "done", True)
    assert run["options"] == {
        "types": [1, 2, 3], "page_size": 4, "rate": 150.0, "concurrency": 16,
        "hold_min_edges": 20, "hold_share": 0.5,
    }  # fmt: skip
    assert run["held"] == {"count": 0, "lists": []}
    assert run["reconciliation"] == {  # a first crawl: baselines, nothing to reconcile
        "lists": 0, "live": 0, "missed_added": 0, "missed_removed": 0, "drift": 0,
        "live_share": None, "touched": 0,
    }  # fmt: skip
    assert run["workers"] == []  # the sync has ended: no live process
    assert run["quarantined"] == {
        "total": 0, "by_kind": {"unstorable": 0, "conflict": 0}, "by_reason": [], "samples": [],
    }  # fmt: skip
    assert run["items"] == sum(len(items) for items in truth.values())
    # Every page is one call, plus the follow_get_info calls that sized the lists (etl.sizes).
    sizing = -(-len(graph.accounts) // INFO_BATCH)
    assert run["pages"] + sizing == run["requests"] == requests_seen(server)
    assert (run["edges_removed"], run["errors"]) == (0, [])
    started, finished, moved = (
        datetime.fromisoformat(run[k]) for k in ("started_at", "finished_at", "last_activity")
    )
    assert started.tzinfo is not None
    assert started <= moved <= finished


@pytest.mark.usefixtures("engine")
def test_status_of_a_job_without_runs_says_so(db_url: URL, tmp_path: Path) -> None:
    """``status`` of a job that never ran prints that it has no runs and exits 0."""
    env = cli_env(db_url)
    result = etl(env, tmp_path, "status", "--job", "never")
    assert result.returncode == 0, result.stderr
    assert "'never' has no runs" in result.stdout


@pytest.mark.usefixtures("engine")
def test_status_json_of_a_job_without_runs_has_a_null_run(db_url: URL, tmp_path: Path) -> None:
    """``status --json`` of a job that never ran is ``{"job": ..., "run": null}``."""
    env = cli_env(db_url)
    assert status_json(env, tmp_path, job="never") == {"job": "never", "run": None}


# --- demo, sandbox, usersig, help ----------------------------------------------------------


def demo_counts(stdout: str) -> dict[str, int]:
    """Edges per type and profile count from the summary ``demo`` prints."""
    counts = {
        name: int(n) for name, n in re.findall(r"^\s+(fans|follows|mutual)\s+(\d+) edges$",
                                               stdout, re.MULTILINE)
    }  # fmt: skip
    profiles = re.search(r"^profiles: (\d+) users", stdout, re.MULTILINE)
    assert profiles is not None, stdout
    counts["profiles"] = int(profiles.group(1))
    return counts


def expected_demo_counts(users: int, run: int) -> dict[str, int]:
    """What the ``run``-th ``demo --users N`` (seed 1) must report: the edges of its graph,
    changed once per earlier run, and every user listed so far."""
    graph = Graph(users=users, seed=1)
    listed: set[str] = set()
    for generation in range(run):
        if generation:
            graph.mutate(seed=generation)
        truth = graph.truth(graph.accounts, TYPES)
        listed.update(user for items in truth.values() for user in items)
    edges = dict.fromkeys(("fans", "follows", "mutual"), 0)
    for (_, follow_type), items in truth.items():
        edges[("fans", "follows", "mutual")[follow_type - 1]] += len(items)
    return {**edges, "profiles": len(listed)}


@pytest.mark.slow
def test_demo_prints_its_graph_and_runs_again_on_the_same_database(tmp_path: Path) -> None:
    """``demo --users 40`` exits 0 printing the edges per type and the profiles of its graph,
    then a live follow in the tables within a second and the next sync's drift of 0; and does
    the same for the changed graph when run a second time on the same database."""
    env = cli_env(f"sqlite:///{tmp_path / 'demo.db'}")
    for run in (1, 2):
        result = etl(env, tmp_path, "demo", "--users", "40")
        assert result.returncode == 0, result.stderr
        assert demo_counts(result.stdout) == expected_demo_counts(40, run)
        arrived = re.search(r"^  in the tables (\d+\.\d+) s later: 4 edges", result.stdout, re.M)
        assert arrived is not None, result.stdout
        assert float(arrived.group(1)) < 1.0
        assert re.search(r"^next sync .*: 4 changes seen live, .*\(drift 0\)", result.stdout, re.M)


class SandboxProcess:
    """``python -m etl sandbox`` running in a subprocess, with the URL it announced."""

    def __init__(self, proc: subprocess.Popen[str], first_line: str) -> None:
        self.proc = proc
        self.first_line = first_line
        found = re.search(r" at (http://127\.0\.0\.1:(\d+));", first_line)
        assert found is not None, first_line
        self.url = found.group(1)
        self.port = int(found.group(2))


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
    """``sandbox --port 0 --users 50`` in a subprocess, stopped after the test."""
    env = cli_env(f"sqlite:///{tmp_path / 'unused.db'}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "sandbox", "--port", "0", "--users", "50"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield SandboxProcess(proc, proc.stdout.readline())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.slow
def test_sync_against_the_sandbox_command_stores_its_graph(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    """A sync of the accounts a ``sandbox --port 0`` subprocess lists, at the port it announced,
    stores exactly its graph."""
    assert sandbox_process.port != 0
    accounts = httpx.get(f"{sandbox_process.url}/sandbox/accounts", timeout=5).json()["accounts"]
    config = SandboxConfig()
    database = f"sqlite:///{tmp_path / 'follow.db'}"
    env = cli_env(
        database,
        IM_BASE_URL=sandbox_process.url,
        IM_SDKAPPID=str(config.sdkappid),
        IM_ADMIN=config.admin,
        IM_SECRET_KEY=config.secret_key,
    )
    migrate(env, tmp_path)
    result = etl(env, tmp_path, "sync", "--accounts", str(write_accounts(tmp_path / "a", accounts)))
    assert result.returncode == 0, result.stderr
    graph = Graph(users=50, seed=1)
    engine = db.make_engine(database_url(database))
    try:
        assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))
    finally:
        engine.dispose()


def test_sandbox_command_stops_on_ctrl_c(sandbox_process: SandboxProcess) -> None:
    """SIGINT stops a ``sandbox`` subprocess promptly with exit 0 and no traceback."""
    sandbox_process.proc.send_signal(signal.SIGINT)
    _, stderr = sandbox_process.proc.communicate(timeout=5)
    assert sandbox_process.proc.returncode == 0
    assert "Traceback" not in stderr


def test_usersig_command_prints_a_usersig_the_service_accepts(tmp_path: Path) -> None:
    """``usersig --expire 3600`` prints a UserSig that verifies for the configured app, admin
    and key, valid for an hour."""
    env = cli_env(
        f"sqlite:///{tmp_path / 'unused.db'}",
        IM_SDKAPPID="1400000123",
        IM_ADMIN="ops_admin",
        IM_SECRET_KEY="a-secret-key-for-this-test",
    )
    result = etl(env, tmp_path, "usersig", "--expire", "3600")
    assert result.returncode == 0, result.stderr
    fields = usersig.verify(
        result.stdout.strip(),
        sdkappid=1400000123,
        identifier="ops_admin",
        secret_key="a-secret-key-for-this-test",
        now=int(time.time()),
    )
    assert fields.expire == 3600


@pytest.mark.parametrize(
    ("command", "options"),
    [
        pytest.param(
            (),
            (
                *("migrate", "sync", "worker", "status", "verify", "report", "sandbox", "demo"),
                *("prune", "prune-events"),
                *("usersig", "--verbose", "--quiet", "--log-format"),
            ),
            id="follow-etl",
        ),
        pytest.param(("migrate",), ("--help",), id="migrate"),
        pytest.param(
            ("sync",),
            (
                *("--accounts", "--accounts-query", "--account", "--types", "--job"),
                *("--restart", "--page-size", "--metrics-file", "--pushgateway"),
                *("--rate", "--concurrency", "--wait", "--keep-runs"),
            ),
            id="sync",
        ),
        pytest.param(
            ("worker",),
            ("--job", "--metrics-file", "--pushgateway", "--metrics-every"),
            id="worker",
        ),
        pytest.param(("verify",), ("--job", "--repair", "--json"), id="verify"),
        pytest.param(("report",), ("--out", "--job"), id="report"),
        pytest.param(("status",), ("--job", "--json"), id="status"),
        pytest.param(
            ("sandbox",),
            (
                *("--host", "--port", "--users", "--seed", "--faults", "--latency-ms", "--rate"),
                *("--fault-kinds", "--hostile", "--loop-account", "--big-lists"),
            ),
            id="sandbox",
        ),
        pytest.param(("prune",), ("--job", "--keep-runs", "--json"), id="prune"),
        pytest.param(("prune-events",), ("--before", "--json"), id="prune-events"),
        pytest.param(("demo",), ("--users", "--seed", "--rate"), id="demo"),
        pytest.param(("usersig",), ("--expire",), id="usersig"),
    ],
)
def test_help_lists_the_options(
    command: tuple[str, ...], options: tuple[str, ...], tmp_path: Path
) -> None:
    """``--help`` of the program and of each command exits 0 and names every option."""
    result = etl(cli_env(f"sqlite:///{tmp_path / 'unused.db'}"), tmp_path, *command, "--help")
    assert result.returncode == 0, result.stderr
    missing = [option for option in options if option not in result.stdout]
    assert missing == []
    assert not (tmp_path / "unused.db").exists()
