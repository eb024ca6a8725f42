"""Prometheus metrics of sync: the textfile for node_exporter and a real Pushgateway."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from etl import db
from etl.sandbox import Graph, SandboxServer
from tests.conftest import IN_CI
from tests.e2e.test_cli import cli_env, etl, migrate, requests_seen, write_accounts

pytestmark = pytest.mark.slow
Start = Callable[..., SandboxServer]
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text exposition -> {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    """The sample ``name`` whose labels include ``labels``."""
    matches = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(matches) == 1, (name, labels, sorted(k for k in found if k[0] == name))
    return matches[0]


def test_metrics_file_is_written_while_running_and_at_exit(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """--metrics-file is refreshed during the sync and ends with the run's figures and exit 0."""
    graph = Graph(users=40, seed=61)
    server = running_sandbox(graph, latency_ms=20)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    prom = tmp_path / "textfile" / "follow_etl.prom"
    prom.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "sync", "--job", "nightly", "--accounts", str(accounts),
         "--page-size", "4", "--rate", "60", "--metrics-file", str(prom),
         "--metrics-every", "0.3"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen_running = False
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if prom.exists() and "follow_etl_api_calls_total" in prom.read_text():
                found = samples(prom.read_text())
                seen_running = ("follow_etl_exit_code", (("job", "nightly"),)) not in found
                if seen_running:
                    break
            time.sleep(0.1)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert seen_running, "the file was not written before the end"
    assert list(prom.parent.iterdir()) == [prom]  # the rename leaves no temporary file behind
    found = samples(prom.read_text())
    calls = requests_seen(server)
    lists = 3 * len(graph.accounts)
    assert value(found, "follow_etl_api_calls_total", job="nightly") == calls
    assert value(found, "follow_etl_api_answers_total", job="nightly", code="0") == calls
    assert value(found, "follow_etl_lists", job="nightly", status="done") == lists
    assert value(found, "follow_etl_lists", job="nightly", status="failed") == 0
    items = sum(len(v) for v in graph.truth(graph.accounts, (1, 2, 3)).values())
    assert value(found, "follow_etl_items_total", job="nightly") == items
    assert value(found, "follow_etl_exit_code", job="nightly") == 0
    assert value(found, "follow_etl_workers", job="nightly") == 1
    assert abs(value(found, "follow_etl_last_success_timestamp_seconds") - time.time()) < 60
    assert value(found, "follow_etl_run_duration_seconds", job="nightly") > 0
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT count(*) FROM profile_snapshots")).scalar_one()
    engine.dispose()
    assert versions > 0
    assert value(found, "follow_etl_profile_versions_stored_total", job="nightly") == versions


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus Pushgateway (Debian's) on a free loopback port."""
    if not Path(PUSHGATEWAY).exists():
        if IN_CI:
            pytest.fail("prometheus-pushgateway must be installed under CI=true (.ci/run does)")
        pytest.skip("prometheus-pushgateway is not installed (apt-get install it)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        # Debian's build persists to /var/lib/prometheus by default: this one keeps its own.
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}",
         f"--persistence.file={tmp_path / 'pushgateway.data'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the Pushgateway did not start")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_metrics_are_pushed_to_a_pushgateway_grouped_by_job(
    db_url: URL, running_sandbox: Start, pushgateway: str, tmp_path: Path
) -> None:
    """--pushgateway pushes the run's figures, grouped by job and instance, read back from it."""
    graph = Graph(users=30, seed=62)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    job = f"pushed-{db_url.get_backend_name()}"
    result = etl(env, tmp_path, "sync", "--job", job, "--accounts", str(accounts),
                 "--pushgateway", pushgateway)  # fmt: skip
    assert result.returncode == 0, result.stderr
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as answer:  # noqa: S310
        found = samples(answer.read().decode())
    calls = requests_seen(server)
    assert value(found, "follow_etl_api_calls_total", job=job) == calls
    assert value(found, "follow_etl_lists", job=job, status="done") == 3 * len(graph.accounts)
    assert value(found, "follow_etl_exit_code", job=job) == 0
    instances = {
        dict(ls).get("instance")
        for (n, ls) in found
        if n == "follow_etl_exit_code" and dict(ls).get("job") == job
    }
    assert len(instances) == 1
    assert instances.pop()


def test_an_unreachable_pushgateway_never_fails_the_sync(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """A Pushgateway that is down costs a warning, not the night's run."""
    graph = Graph(users=10, seed=63)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    result = etl(env, tmp_path, "sync", "--account", graph.accounts[0], "--pushgateway",
                 f"http://127.0.0.1:{free_port()}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cannot push to the Pushgateway" in result.stderr
