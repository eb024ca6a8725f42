"""Logs a shipper can parse: with --log-format json every stderr line is one JSON object, the
final error line included; global options work before and after the command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxServer
from tests.e2e.conftest import cli_env, etl, migrate, wait_for_requests, write_accounts

pytestmark = pytest.mark.slow
Start = Callable[..., SandboxServer]


def records(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line as a JSON object (json.loads fails the test on any other line)."""
    return [json.loads(line) for line in stderr.splitlines()]


@pytest.mark.parametrize(
    "args",
    [
        ("--log-format", "json", "sync", "--account", "a"),
        ("sync", "--log-format", "json", "--account", "a"),
        ("sync", "--log-format=json", "-q", "--account", "a"),
    ],
    ids=["before", "after", "after-equals"],
)
def test_a_configuration_error_is_one_json_line_with_its_exit_code(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """Wherever --log-format json stands, the final error is one JSON line with exit_code."""
    env = cli_env(f"sqlite:///{tmp_path / 'x.db'}")
    env.pop("IM_SDKAPPID", None)
    result = etl(env, tmp_path, *args)
    assert result.returncode == 3, result.stderr
    (line,) = records(result.stderr)
    assert line["level"] == "error"
    assert line["exit_code"] == 3
    assert "IM_SDKAPPID" in line["message"]
    assert isinstance(line["pid"], int)


def test_a_usage_error_is_a_json_line_too(tmp_path: Path) -> None:
    """Even argparse's own error (an unknown option) speaks JSON when JSON was asked for."""
    result = etl(cli_env(f"sqlite:///{tmp_path / 'x.db'}"), tmp_path, "sync", "--log-format",
                 "json", "--no-such-option")  # fmt: skip
    assert result.returncode == 2
    (line,) = records(result.stderr)
    assert line["exit_code"] == 2
    assert "--no-such-option" in line["message"]


def test_global_options_after_the_command_count_and_before_ones_still_do(tmp_path: Path) -> None:
    """-q after the command silences info lines; -q before it does too."""
    env = cli_env(f"sqlite:///{tmp_path / 'x.db'}")
    for args in (("migrate", "-q"), ("-q", "migrate"), ("migrate", "--log-format", "json", "-q")):
        result = etl(env, tmp_path, *args)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""


def test_sigterm_ends_a_json_logged_sync_in_json_lines_that_carry_run_job_and_pid(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """A SIGTERMed sync with JSON logs writes only JSON lines on stderr, the last one the
    error with exit_code 143; once the run is open every record names run_id, job and pid."""
    graph = Graph(users=60, seed=35)
    server = running_sandbox(graph, latency_ms=20)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "sync", "--log-format", "json", "--job", "nightly",
         "--accounts", str(accounts), "--page-size", "3", "--rate", "40"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_requests(server, proc, 30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    lines = records(err.decode())
    assert lines[-1]["level"] == "error"
    assert lines[-1]["exit_code"] == 143
    assert "resumable" in lines[-1]["message"]
    assert [line for line in lines if line.get("exit_code") is not None] == lines[-1:]
    assert all(line["job"] == "nightly" and line["pid"] == proc.pid for line in lines)
    with_run = [line for line in lines if "run_id" in line]
    assert with_run
    assert lines.index(with_run[0]) + len(with_run) == len(lines)  # from then on, every one
