"""The package as a user gets it: `python -m build` makes an sdist and a wheel from it, and the
wheel, installed into a fresh virtual environment, migrates, demos and syncs from a directory
that is not the checkout."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import etl
from etl.sandbox import Graph, SandboxServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IN_SDIST = (
    "migrations/env.py",
    "alembic.ini",
    "tests/conftest.py",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "MANIFEST.in",
)


@dataclass(frozen=True)
class Built:
    """The distributions ``python -m build`` made, and a venv with the wheel installed."""

    wheel: Path
    sdist: Path
    venv: Path

    def run(self, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        """The installed ``follow-etl ARGS``, run to its end in ``cwd``."""
        return subprocess.run(
            [str(self.venv / "bin" / "follow-etl"), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _run(*args: str | Path, cwd: Path) -> None:
    """Run a build or install step; fail the test with its output if it fails."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Build the sdist, then the wheel from the sdist (so the sdist is proven complete), and
    install the wheel with its dependencies into a venv that has never seen the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    _run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    venv = tmp / "venv"
    # No pip of its own: this environment's pip installs into it (--python), which saves the
    # few seconds ensurepip takes. Dependencies resolve from the configured index.
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    _run(
        sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
        "--quiet", wheel, cwd=tmp,
    )  # fmt: skip
    return Built(wheel=wheel, sdist=sdist, venv=venv)


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working directory outside the checkout and an environment with a SQLite file there
    and nothing that points back at the checkout."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("IM_")
    }
    env["DATABASE_URL"] = f"sqlite:///{cwd / 'graph.db'}"
    env["IM_RETRY_WAIT"] = "0"
    return cwd, env


def test_wheel_ships_the_migrations_and_py_typed_and_every_package_but_no_tests(
    built: Built,
) -> None:
    """The wheel holds etl/_migrations (every version of the checkout), py.typed, the licence
    and every package of the checkout, and nothing from tests/."""
    names = set(zipfile.ZipFile(built.wheel).namelist())
    versions = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert versions
    assert {"etl/_migrations/env.py", "etl/_migrations/script.py.mako", "etl/py.typed"} <= names
    assert {f"etl/_migrations/versions/{v}" for v in versions} <= names
    packages = {str(p.relative_to(ROOT)) for p in (ROOT / "etl").rglob("__init__.py")}
    missing = packages - names
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert built.wheel.name == f"follow_etl-{etl.__version__}-py3-none-any.whl"


def test_sdist_holds_the_sources_a_developer_tests_from(built: Built) -> None:
    """The sdist carries the migrations, alembic.ini, tests, README, LICENSE and CHANGELOG."""
    with tarfile.open(built.sdist) as tar:
        top = f"follow_etl-{etl.__version__}/"
        names = {n.removeprefix(top) for n in tar.getnames()}
    assert set(IN_SDIST) <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_cli_migrates_demos_and_syncs_outside_the_checkout(
    built: Built,
    outside: tuple[Path, dict[str, str]],
    running_sandbox: Callable[..., SandboxServer],
) -> None:
    """From a directory outside the checkout, the installed follow-etl prints its version,
    migrates a fresh SQLite file, runs a 30-user demo and syncs against a sandbox: all exit 0,
    the follow graph is stored, and the code that ran is the installed copy."""
    cwd, env = outside
    python = str(built.venv / "bin" / "python")
    where = subprocess.run(
        [
            python,
            "-c",
            "import etl, etl.store.db; print(etl.__file__); print(etl.store.db.migrations_dir())",
        ],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    for line in where.stdout.splitlines():
        assert Path(line).is_relative_to(built.venv), where.stdout

    version = built.run(cwd, env, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["follow-etl", etl.__version__]

    migrate = built.run(cwd, env, "migrate")
    assert migrate.returncode == 0, migrate.stderr

    demo = built.run(cwd, env, "demo", "--users", "30")
    assert demo.returncode == 0, demo.stdout + demo.stderr

    server = running_sandbox(Graph(users=20, seed=2))
    config = server.sandbox.config
    env |= {
        "IM_BASE_URL": server.url,
        "IM_SDKAPPID": str(config.sdkappid),
        "IM_ADMIN": config.admin,
        "IM_SECRET_KEY": config.secret_key,
    }
    sync = built.run(cwd, env, "sync", "--job", "wheel", "--account", "user_000001")
    assert sync.returncode == 0, sync.stdout + sync.stderr

    with sqlite3.connect(cwd / "graph.db") as conn:
        edges = conn.execute("SELECT count(*) FROM follow_edges").fetchone()[0]
        jobs = {row[0] for row in conn.execute("SELECT job FROM sync_runs WHERE status = 'done'")}
    assert edges > 0
    assert jobs == {"demo", "demo-live", "wheel"}  # demo-live: the demo's sync after a callback
