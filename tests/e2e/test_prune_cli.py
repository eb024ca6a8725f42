"""`prune` and `prune-events` as subprocesses: bad input exits 2 with one line, good input
prints what went (as JSON with --json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import assert_one_error_line, cli_env, etl, migrate


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("prune", "--keep-runs", "0"), "at least 1"),
        (("prune", "--keep-runs", "many"), "at least 1"),
        (("prune", "--job", "nosuch"), "has no runs"),
        (("prune-events",), "--before"),
        (("prune-events", "--before", "yesterday"), "expected a date"),
        (("prune-events", "--before", "2999-01-01"), "in the future"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], says: str, tmp_path: Path) -> None:
    """Each mistake is a usage error (2) said in one line, and deletes nothing."""
    env = cli_env(f"sqlite:///{tmp_path / 'follow.db'}")
    migrate(env, tmp_path)
    result = etl(env, tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert says in assert_one_error_line(result)


def test_prune_and_prune_events_print_what_went(tmp_path: Path) -> None:
    """On an empty database both succeed and say nothing was deleted, in text and JSON."""
    env = cli_env(f"sqlite:///{tmp_path / 'follow.db'}")
    migrate(env, tmp_path)
    text = etl(env, tmp_path, "prune", "--keep-runs", "3")
    assert text.returncode == 0, text.stderr
    assert "checkpoints of 0 runs deleted" in text.stdout
    doc = etl(env, tmp_path, "prune", "--json")
    assert doc.returncode == 0, doc.stderr
    assert json.loads(doc.stdout) == {"runs": [], "checkpoints": 0, "seen": 0}
    events = etl(env, tmp_path, "prune-events", "--before", "2020-01-01", "--json")
    assert events.returncode == 0, events.stderr
    assert json.loads(events.stdout) == {
        "before": "2020-01-01T00:00:00+00:00",
        "events_deleted": 0,
    }
