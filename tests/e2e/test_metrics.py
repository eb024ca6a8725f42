"""Prometheus metrics of sync: the textfile for node_exporter and a real Pushgateway."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import bcrypt
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxServer
from etl.store import db
from tests.conftest import IN_CI, free_port
from tests.e2e.conftest import cli_env, etl, migrate, requests_seen, write_accounts

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


@contextmanager
def running_pushgateway(tmp_path: Path, users: dict[str, str] | None = None) -> Iterator[str]:
    """A real Prometheus Pushgateway (Debian's) on a free loopback port; with ``users``, it
    asks for basic auth by one of those user names and passwords (its --web.config.file)."""
    if not Path(PUSHGATEWAY).exists():
        if IN_CI:
            pytest.fail("prometheus-pushgateway must be installed under CI=true (.ci/run does)")
        pytest.skip("prometheus-pushgateway is not installed (apt-get install it)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Debian's build persists to /var/lib/prometheus by default: this one keeps its own.
    command = [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}",
               f"--persistence.file={tmp_path / 'pushgateway.data'}"]  # fmt: skip
    if users is not None:
        hashes = {
            name: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
            for name, password in users.items()
        }
        config = tmp_path / "pushgateway-web.yml"
        config.write_text(json.dumps({"basic_auth_users": hashes}))  # YAML reads JSON
        command.append(f"--web.config.file={config}")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):  # noqa: S310
                    break
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and users is not None:  # up, and asking who we are
                    break
                raise
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the Pushgateway did not start")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus Pushgateway (Debian's) on a free loopback port."""
    with running_pushgateway(tmp_path) as url:
        yield url


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


# Characters a URL would misread unless percent-encoded, and some that are not ASCII.
GATE_USER, GATE_PASSWORD = "ops@metrics", "p@ss:w/rd?#% ü"


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` in it, both percent-encoded."""
    scheme, rest = url.split("://")
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


def read_back(
    url: str, user: str, password: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples a Pushgateway that asks for basic auth holds."""
    request = urllib.request.Request(f"{url}/metrics")  # noqa: S310 - http://127.0.0.1
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        return samples(answer.read().decode())


def test_metrics_are_pushed_with_basic_auth_from_the_url(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """--pushgateway http://user:password@host:port (percent-encoded) pushes to a gateway
    that asks for basic auth, and nothing the sync prints holds the password."""
    graph = Graph(users=10, seed=64)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    job = f"auth-{db_url.get_backend_name()}"
    with running_pushgateway(tmp_path, {GATE_USER: GATE_PASSWORD}) as url:
        result = etl(env, tmp_path, "-v", "sync", "--job", job, "--account", graph.accounts[0],
                     "--pushgateway", with_credentials(url, GATE_USER, GATE_PASSWORD))  # fmt: skip
        found = read_back(url, GATE_USER, GATE_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert "cannot push" not in result.stderr
    assert value(found, "follow_etl_exit_code", job=job) == 0
    assert value(found, "follow_etl_api_calls_total", job=job) == requests_seen(server)
    assert quote(GATE_PASSWORD, safe="") not in result.stdout + result.stderr


def test_wrong_pushgateway_credentials_cost_a_warning_without_them(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """A gateway that refuses the credentials is a warning naming HTTP 401, never the
    password, and the sync still succeeds."""
    graph = Graph(users=4, seed=65)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    wrong = "not-the-password-8412"
    with running_pushgateway(tmp_path, {GATE_USER: GATE_PASSWORD}) as url:
        result = etl(env, tmp_path, "sync", "--account", graph.accounts[0],
                     "--pushgateway", with_credentials(url, GATE_USER, wrong))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cannot push to the Pushgateway" in result.stderr
    assert "401" in result.stderr
    assert wrong not in result.stdout + result.stderr


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_credentials_without_a_port_are_used_not_printed(
    db_url: URL, running_sandbox: Start, tmp_path: Path, scheme: str
) -> None:
    """https://user:password@host with no port is the scheme's own port (nothing listens
    on loopback's here: a warning), never an internal error showing the password."""
    graph = Graph(users=4, seed=66)
    server = running_sandbox(graph)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    password = "s3cr3t-no-port-5309"
    result = etl(env, tmp_path, "sync", "--account", graph.accounts[0],
                 "--pushgateway", f"{scheme}://user:{password}@127.0.0.1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cannot push to the Pushgateway" in result.stderr
    for part in (password[i : i + 4] for i in range(len(password) - 3)):
        assert part not in result.stdout + result.stderr
