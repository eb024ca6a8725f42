"""Fixtures and helpers of the end-to-end tests: CLI processes that are reaped whatever happens,
a wall-clock shim compiled for the session, a PostgreSQL server the test may restart (which is
back up before the test ends), and running ``python -m etl`` against a sandbox and a database
(``cli_env``, ``etl``, ``migrate``, ``status_json``, ...)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from etl.sandbox import SandboxServer
from tests.conftest import IN_CI, PG_SERVER, sandbox_env

CLOCKSHIFT_SOURCE = Path(__file__).with_name("clockshift.c")
PG_RESTART_OPT_IN = "FOLLOW_ETL_TEST_PG_RESTART"


class CliProcess:
    """``python -m etl ARGS`` in the background, stdout and stderr each to its own file."""

    def __init__(self, env: dict[str, str], cwd: Path, args: tuple[str, ...], name: str) -> None:
        self.name = name
        self.stdout, self.stderr = cwd / f"{name}.out", cwd / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "etl", *args], env=env, cwd=cwd, stdout=out, stderr=err
            )

    def out(self) -> str:
        """What it printed on stdout so far."""
        return self.stdout.read_text(errors="replace")

    def err(self) -> str:
        """What it printed on stderr so far."""
        return self.stderr.read_text(errors="replace")

    def logs(self) -> str:
        """The tail of both streams, for an assertion message."""
        return (
            f"[{self.name} stdout]\n{self.out()[-3000:]}\n"
            f"[{self.name} stderr]\n{self.err()[-3000:]}"
        )

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

    def signal(self, signum: int) -> float:
        """Send ``signum``; return the monotonic time it was sent."""
        self.proc.send_signal(signum)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        """Its exit code; a process still running after ``timeout`` s is killed and fails the
        test."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout} s\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL it (if still running) and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., CliProcess]]:
    """Start CLI processes, ``spawn(env, *args, name=...)``, in ``tmp_path``; any still running
    when the test ends is killed."""
    started: list[CliProcess] = []

    def start(env: dict[str, str], *args: str, name: str) -> CliProcess:
        process = CliProcess(env, tmp_path, args, name)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def clockshift(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LD_PRELOAD shim of clockshift.c, built with gcc; skipped without gcc, fatal in CI."""
    gcc = shutil.which("gcc")
    if gcc is None:
        if IN_CI:
            pytest.fail("gcc must be installed under CI=true (it builds tests/e2e/clockshift.c)")
        pytest.skip("gcc is not installed")
    library = tmp_path_factory.mktemp("clockshift") / "clockshift.so"
    flags = ("-shared", "-fPIC", "-O2", "-Wall", "-Werror")
    build = subprocess.run(
        [gcc, *flags, "-o", str(library), str(CLOCKSHIFT_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    return library


def shifted(env: dict[str, str], library: Path, seconds: float) -> dict[str, str]:
    """``env`` with the process's wall clock moved by ``seconds`` through the clockshift shim."""
    preload = " ".join(filter(None, (str(library), env.get("LD_PRELOAD"))))
    return {**env, "LD_PRELOAD": preload, "CLOCKSHIFT_SECONDS": str(seconds)}


@dataclass(frozen=True)
class Cluster:
    """A Debian PostgreSQL cluster (pg_ctlcluster's ``version name``) and how to reach it."""

    ctl_program: str  # pg_ctlcluster's full path
    version: str
    name: str
    url: URL

    def ctl(self, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """``pg_ctlcluster --skip-systemctl-redirect VERSION NAME ACTION ...``."""
        return subprocess.run(
            [
                self.ctl_program,
                "--skip-systemctl-redirect",
                self.version,
                self.name,
                action,
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    def answers(self) -> bool:
        """True when a new connection gets an answer to ``SELECT 1``."""
        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            with psycopg.connect(conninfo, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def wait_until_answering(self, timeout: float) -> bool:
        """Poll the server until it answers or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


def _cluster_on(url: URL) -> Cluster | None:
    """The local cluster listening on the port of ``url`` (Debian's postgresql-common)."""
    lsclusters, ctlcluster = shutil.which("pg_lsclusters"), shutil.which("pg_ctlcluster")
    if lsclusters is None or ctlcluster is None:
        return None
    listed = subprocess.run(
        [lsclusters, "--no-header"], capture_output=True, text=True, timeout=30, check=False
    )
    port = str(url.port or 5432)
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == port:
            return Cluster(ctlcluster, fields[0], fields[1], url)
    return None


@pytest.fixture
def pg_restart(pg_server: sa.Engine, pg_url: URL) -> Iterator[Callable[[], None]]:
    """A callable that restarts the PostgreSQL server (fast shutdown). It disturbs every user of
    the server, so it runs only under CI=true or FOLLOW_ETL_TEST_PG_RESTART=1; whatever the test
    does, the server answers again before the test's database is dropped."""
    if not (IN_CI or os.environ.get(PG_RESTART_OPT_IN) == "1"):
        pytest.skip(f"restarts the shared PostgreSQL server: set CI=true or {PG_RESTART_OPT_IN}=1")
    cluster = _cluster_on(make_url(PG_SERVER))
    if cluster is None:
        message = f"no local pg_ctlcluster cluster serves {make_url(PG_SERVER).port or 5432}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)

    def restart() -> None:
        done = cluster.ctl("restart", "-m", "fast")
        assert done.returncode == 0, f"pg_ctlcluster restart failed: {done.stderr}"

    try:
        yield restart
    finally:
        if cluster.ctl("status").returncode != 0:  # down: a restart failed half-way
            cluster.ctl("start")
        assert cluster.wait_until_answering(60), "PostgreSQL did not come back"
        pg_server.dispose()  # its pooled connections died with the old server


# ---- running the CLI -------------------------------------------------------------------


def cli_env(
    database: URL | str, server: SandboxServer | None = None, **extra: str | None
) -> dict[str, str]:
    """The process environment minus any DATABASE_URL/IM_*, plus the database, the sandbox's
    credentials, no retry wait and ``extra`` (None removes a variable)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("IM_")}
    if isinstance(database, URL):
        database = database.render_as_string(hide_password=False)
    env["DATABASE_URL"] = database
    if server is not None:
        env.update(sandbox_env(server))
    env["IM_RETRY_WAIT"] = "0"
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def etl(
    env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m etl ARGS`` to its end and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def migrate(env: dict[str, str], cwd: Path) -> None:
    """``python -m etl migrate``, which must succeed."""
    result = etl(env, cwd, "migrate")
    assert result.returncode == 0, result.stderr


def status_json(env: dict[str, str], cwd: Path, job: str = "default") -> dict[str, Any]:
    """The parsed ``status --json`` document of ``job``."""
    result = etl(env, cwd, "status", "--job", job, "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def write_accounts(path: Path, accounts: list[str]) -> Path:
    """An accounts file, one UserID per line."""
    path.write_text("".join(f"{a}\n" for a in accounts), encoding="utf-8")
    return path


def assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failed command said why in exactly one line on stderr, with no traceback."""
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def requests_seen(server: SandboxServer) -> int:
    """API requests the sandbox has answered so far."""
    count = server.sandbox.stats()["requests"]
    assert isinstance(count, int)
    return count


def wait_for_requests(
    server: SandboxServer, proc: subprocess.Popen[bytes], count: int, timeout: float = 60
) -> float:
    """Wait until the sandbox has answered ``count`` requests; return the seconds waited."""
    started = time.monotonic()
    while requests_seen(server) < count:
        if proc.poll() is not None:
            pytest.fail(f"sync ended (exit {proc.returncode}) before request {count}")
        if time.monotonic() - started > timeout:
            pytest.fail(f"the sandbox did not see request {count} within {timeout} s")
        time.sleep(0.003)
    return time.monotonic() - started
