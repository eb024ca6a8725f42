"""The processes a benchmark runs: the sandbox server and ``python -m etl`` commands.

Each command runs as its own child with stdout and stderr in files (no pipe to fill up), and is
reaped with ``os.wait4``, which gives that one child's CPU time and peak RSS. (``RUSAGE_CHILDREN``
would mix in every child reaped so far, the sandbox included, in its maximum RSS.)

The sandbox's CPU is read from its ``/proc/<pid>/stat``, PostgreSQL's from the server's
processes' (``PgServerCpu``), when the server runs on this machine and /proc lets us read it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.pg import PgServer

_POLL = 0.01  # seconds between checks on a running child: adds at most this to a wall time
_TICK = os.sysconf("SC_CLK_TCK")
_LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


class BenchError(Exception):
    """A step of a case failed: the case reports this line and the bench goes on."""


def clean_env() -> dict[str, str]:
    """This process's environment without the settings a bench sets itself."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("IM_", "DATABASE_URL"))}


@dataclass(frozen=True)
class Finished:
    """One child process, run to its end."""

    args: tuple[str, ...]
    code: int
    started: float  # time.perf_counter() at start
    ended: float  # and at exit
    cpu: float  # user + system seconds of the child
    max_rss_mb: float
    stdout: str
    stderr: str

    @property
    def wall(self) -> float:
        """Seconds from start to exit."""
        return self.ended - self.started

    def last_error(self) -> str:
        """The line that says why it failed, for the table."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        lines = lines or [line.strip() for line in self.stdout.splitlines() if line.strip()]
        return f"`etl {self.args[0]}` exited {self.code}: {(lines or ['no output'])[-1][:200]}"


def high_water_kb(pid: int) -> int:
    """The peak resident set of a live process (VmHWM, kB); 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Child:
    """A ``python -m etl ...`` process started now; ``finish`` waits for it with a deadline."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.args = tuple(args)
        stem = f"{args[0]}-{time.monotonic_ns()}"
        self._out_path = workdir / f"{stem}.out"
        self._err_path = workdir / f"{stem}.err"
        with self._out_path.open("wb") as out, self._err_path.open("wb") as err:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "etl", "-q", *args], env=env, stdout=out, stderr=err
            )

    def finish(self, timeout: float) -> Finished:
        """Wait for the exit (killing the child past ``timeout`` seconds); reap it with wait4."""
        deadline = self.started + timeout
        peak_kb = 0
        while True:
            peak_kb = max(peak_kb, high_water_kb(self.proc.pid))
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                self.proc.kill()
                pid, status, usage = os.wait4(self.proc.pid, 0)
                status = -1
                break
            time.sleep(_POLL)
        ended = time.perf_counter()
        code = os.waitstatus_to_exitcode(status) if status != -1 else -9
        self.proc.returncode = code  # reaped here, so Popen must not wait for it again
        return Finished(
            args=self.args,
            code=code,
            started=self.started,
            ended=ended,
            cpu=usage.ru_utime + usage.ru_stime,
            # VmHWM, the peak of this process's own memory: ru_maxrss of a child also counts
            # the bench's RSS when it was spawned (the kernel carries it across exec).
            max_rss_mb=(peak_kb or usage.ru_maxrss) / 1024,
            stdout=self._out_path.read_text(errors="replace"),
            stderr=self._err_path.read_text(errors="replace")
            + (f"\nkilled after {timeout:.0f} s" if status == -1 else ""),
        )

    def exited(self) -> bool:
        """True once the child has ended (without reaping it: ``finish`` does that)."""
        found = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return found is not None

    def kill(self) -> None:
        """Stop it now, if it still runs."""
        if self.proc.returncode is None:
            self.proc.kill()
            os.wait4(self.proc.pid, 0)
            self.proc.returncode = -9


def run_cli(args: list[str], env: dict[str, str], workdir: Path, timeout: float) -> Finished:
    """Run one command to its end; raise BenchError when it fails."""
    done = Child(args, env, workdir).finish(timeout)
    if done.code != 0:
        raise BenchError(done.last_error())
    return done


class SandboxProcess:
    """``python -m etl sandbox`` on a free loopback port, with its admin routes at hand."""

    def __init__(self, users: int, seed: int, extra: list[str], ready_timeout: float = 120) -> None:
        self.users = users
        command = ["sandbox", "--port", "0", "--users", str(users), "--seed", str(seed), *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "etl", "-q", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], ready_timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if " at " not in line:
            self.stop()
            raise BenchError(f"the sandbox did not start within {ready_timeout:.0f} s: {line!r}")
        self.url = line.split(" at ", 1)[1].split(";", 1)[0].strip()

    def get(self, path: str) -> Any:
        """GET an admin route; the decoded JSON answer."""
        with urllib.request.urlopen(self.url + path, timeout=120) as answer:  # noqa: S310
            return json.load(answer)

    def post(self, path: str, body: object) -> Any:
        """POST JSON to an admin route; the decoded JSON answer."""
        request = urllib.request.Request(  # noqa: S310 (loopback URL we started)
            self.url + path, data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=300) as answer:  # noqa: S310
            return json.load(answer)

    def cpu_seconds(self) -> float:
        """User + system CPU the sandbox has used so far (Linux /proc)."""
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        """Stop the server and reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a background shell may have SIGINT ignored
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU a live process has used so far (Linux /proc); NaN if unreadable."""
    fields = _stat(pid)
    return float("nan") if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


class PgServerCpu:
    """CPU of the whole PostgreSQL server, from /proc: the postmaster's own utime + stime, that
    of its live children (client backends, parallel workers, autovacuum launcher and workers,
    checkpointer, background writer, walwriter, logical replication launcher), and its
    cutime + cstime, where the kernel adds a child's CPU when the postmaster reaps it: every
    backend of a sync exits when the sync ends, and its CPU would be lost from a sum over live
    processes. Other databases' work on the same server counts too (the bench cannot tell it
    apart once a backend has exited)."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    @classmethod
    def find(cls, server: PgServer) -> PgServerCpu | None:
        """The server's postmaster, via the parent of one of our backends; None when the server
        is not on this machine or /proc does not show its processes."""
        if (server.url.host or "") not in _LOCAL_HOSTS and not str(server.url.host).startswith("/"):
            return None
        try:
            backend = server.backend_pid()
        except Exception:  # noqa: BLE001 (no figure is better than no bench)
            return None
        fields = _stat(backend)
        if fields is None or not _is_postgres(backend):
            return None
        postmaster = int(fields[1])
        if not _is_postgres(postmaster) or _stat(postmaster) is None:
            return None
        found = cls(postmaster)
        return found if found.seconds() is not None else None

    def _children(self) -> list[tuple[int, list[str]]]:
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = _stat(int(entry.name))
                if fields is not None and int(fields[1]) == self.postmaster:
                    found.append((int(entry.name), fields))
        return found

    def seconds(self) -> float | None:
        """CPU seconds the server has used so far; None if /proc cannot be read.

        The postmaster's children's totals are read between two reads of its own: a child
        reaped in between would count twice (or not at all), so that case reads again."""
        for _ in range(10):
            first = _stat(self.postmaster)
            if first is None:
                return None
            live = sum(int(f[11]) + int(f[12]) for _, f in self._children())
            second = _stat(self.postmaster)
            if second is None:
                return None
            if second[13:15] == first[13:15]:
                own = sum(int(second[i]) for i in (11, 12, 13, 14))
                return (own + live) / _TICK
        return None

    def settle(self, database: str, ours: Iterable[int] = (), timeout: float = 10.0) -> None:
        """Wait until no backend of ``database`` but ``ours`` (the bench's own long-lived
        connections) is left among the postmaster's children: the ones of a finished sync exit,
        and are reaped, shortly after it."""
        keep = set(ours)
        deadline = time.monotonic() + timeout
        needle = f" {database} ".encode()
        while time.monotonic() < deadline:
            busy = False
            for pid, fields in self._children():
                if pid in keep:
                    continue
                if fields[0] == "Z":
                    busy = True  # exited, not reaped yet: its CPU is not in cutime
                    break
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if needle in title.replace(b"\0", b" ") + b" ":
                    busy = True
                    break
            if not busy:
                return
            time.sleep(0.02)


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    except OSError:
        return False
