"""The README's etl.api example, run as a user would run it: a script, against the sandbox."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxServer
from etl.store import db
from tests.conftest import nonempty, stored_lists
from tests.e2e.conftest import cli_env, write_accounts

pytestmark = pytest.mark.slow
Start = Callable[..., SandboxServer]
README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    """Every ```python block of the README."""
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def api_example() -> str:
    """The block that follows the README's <!-- api-example --> marker."""
    found = re.search(r"<!-- api-example -->\n```python\n(.*?)```", README.read_text("utf-8"), re.S)
    assert found, "the README lost its API example"
    return found.group(1)


def test_the_readme_api_example_runs_against_the_sandbox(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """The example migrates, syncs accounts.txt as job "nightly", prints the counts and the
    status, and what it stored is the sandbox's truth; run again, it resumes nothing and
    starts run 2."""
    graph = Graph(users=30, seed=71)
    server = running_sandbox(graph)
    write_accounts(tmp_path / "accounts.txt", graph.accounts)
    script = tmp_path / "example.py"
    script.write_text(api_example(), encoding="utf-8")
    env = cli_env(db_url, server)
    for run_id in (1, 2):
        result = subprocess.run(
            [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"finished {{'run_id': {run_id}, 'job': 'nightly', "), lines
        assert lines[-1] == "status: done", lines
    engine = db.make_engine(db_url)
    try:
        assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, (1, 2, 3)))
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT count(*) FROM sync_runs")).scalar_one()
        assert runs == 2
    finally:
        engine.dispose()


def test_every_readme_python_block_is_valid_python() -> None:
    """The orchestrator recipes cannot run here (no Airflow, Dagster or Prefect), but they
    parse, and they call only what etl.api has."""
    from etl import api

    blocks = python_blocks()
    assert len(blocks) >= 4  # the example and the three recipes
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "api"
            ):
                assert hasattr(api, node.attr), f"README calls api.{node.attr}, which is not there"
