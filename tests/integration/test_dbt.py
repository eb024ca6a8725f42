"""The dbt project in dbt/ against a synced PostgreSQL database: `dbt build` (staging views plus
every dbt test) and `dbt source freshness` pass, and the staging views hold what the sync stored."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl.sandbox import Graph, SandboxServer
from etl.sync import SyncReport
from tests.conftest import IN_CI, run

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "dbt"
# dbt lives in its own venv (the `dbt` extra in pyproject.toml says why); FOLLOW_ETL_DBT
# points elsewhere.
DBT = Path(os.environ.get("FOLLOW_ETL_DBT") or ROOT / ".venv-dbt" / "bin" / "dbt")
SCHEMA = "analytics"
TIMEOUT = 300  # seconds per dbt command; a build of this project takes a few
Start = Callable[..., SandboxServer]


@pytest.fixture
def dbt() -> Path:
    """The dbt executable; skipped locally when absent, fatal under CI=true."""
    if not DBT.exists():
        message = f"dbt is not installed at {DBT} (`make dbt-env` makes .venv-dbt)"
        if IN_CI:
            pytest.fail(f"{message}: required under CI=true")
        pytest.skip(message)
    return DBT


def run_sync(engine: sa.Engine, server: SandboxServer, accounts: list[str]) -> SyncReport:
    """One complete sync of ``accounts`` against ``server``."""
    report = run(engine, server, accounts, job="nightly")
    assert report.problem() is None
    return report


def run_dbt(dbt: Path, args: list[str], env: dict[str, str], tmp: Path) -> tuple[int, str]:
    """Run one dbt command on the project, writing only under ``tmp``: (exit code, output)."""
    command = [
        str(dbt),
        # A deprecated property is an error here, before a dbt upgrade turns it into one.
        "--warn-error-options",
        '{"error": ["Deprecations"]}',
        *args,
        "--project-dir",
        str(PROJECT),
        "--target-path",
        str(tmp / "target"),
    ]
    result = subprocess.run(
        command, env=env, cwd=tmp, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    return result.returncode, result.stdout + result.stderr


def test_dbt_build_passes_on_a_synced_database(
    pg_engine: sa.Engine, running_sandbox: Start, dbt: Path, tmp_path: Path
) -> None:
    """After two syncs with changes between them, dbt build and source freshness exit 0, each
    staging view has as many rows as the analyst view it stages (none empty), and an event of an
    unknown run then fails dbt test."""
    graph = Graph(users=60, seed=5)
    server = running_sandbox(graph)
    run_sync(pg_engine, server, graph.accounts)
    graph.mutate(1, unfollow=0.1, follow=0.1)
    run_sync(pg_engine, server, graph.accounts)

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(PROJECT / "profiles.example.yml", profiles / "profiles.yml")
    url = pg_engine.url
    env = {
        **os.environ,
        "DBT_PROFILES_DIR": str(profiles),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_VERSION_CHECK": "false",
        "PGHOST": url.host or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "postgres",
        "PGPASSWORD": url.password or "",
        "PGDATABASE": url.database or "",
        "DBT_SCHEMA": SCHEMA,
        "FOLLOW_ETL_SCHEMA": "public",
    }
    for args in (["build"], ["source", "freshness"]):
        code, output = run_dbt(dbt, args, env, tmp_path)
        assert code == 0, f"dbt {' '.join(args)} exited {code}:\n{output}"

    staged = {
        "stg_current_follow_edges": "current_follow_edges",
        "stg_current_profiles": "current_profiles",
        "stg_follows": "follows",
        "stg_account_follow_counts": "account_follow_counts",
        "stg_daily_follow_changes": "daily_follow_changes",
    }
    with pg_engine.connect() as conn:
        kinds: dict[str, str] = dict(
            conn.execute(
                sa.text(
                    "SELECT table_name, table_type FROM information_schema.tables "
                    "WHERE table_schema = :schema"
                ),
                {"schema": SCHEMA},
            ).all()
        )
        counts = {
            model: (
                conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.{model}")).scalar_one(),
                conn.execute(sa.text(f"SELECT count(*) FROM public.{view}")).scalar_one(),
            )
            for model, view in staged.items()
        }
    assert kinds == dict.fromkeys(staged, "VIEW")
    assert counts["stg_account_follow_counts"][0] == len(graph.accounts)
    for model, (rows, expected) in counts.items():
        assert rows == expected > 0, f"{model}: {rows} rows, its view has {expected}"

    # The dbt tests bite: an event of a run that does not exist breaks a relationship the
    # database does not enforce (follow_edge_events.run_id has no foreign key).
    with pg_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO follow_edge_events "
                "(account, follow_type, to_account, event, observed_at, run_id) "
                "VALUES ('a', 1, 'b', 'added', now(), 999999)"
            )
        )
    code, output = run_dbt(
        dbt, ["test", "--select", "source:follow_etl.follow_edge_events"], env, tmp_path
    )
    assert code == 1, output
    assert "FAIL 1 source_relationships_follow_etl_follow_edge_events_run_id" in output, output
