"""etl.api: the library entry point orchestrators call. Each outcome is a return value or the
one exception of its exit code, with what was done attached; real sandbox, real databases."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl import api
from etl.sandbox import Graph, SandboxServer
from etl.store import db, workers
from tests.conftest import TYPES, nonempty, sandbox_env, stored_lists

Start = Callable[..., SandboxServer]
README = Path(__file__).resolve().parents[2] / "README.md"
EXIT_CODES: dict[type[api.EtlError], int] = {
    api.UsageError: 2,
    api.ConfigError: 3,
    api.FatalApiError: 4,
    api.DatabaseError: 5,
    api.RunIncomplete: 6,
    api.JobBusy: 7,
    api.VerifyMismatch: 9,
}


def environment(
    url: URL | str, server: SandboxServer | None = None, **extra: str
) -> dict[str, str]:
    """The settings as a mapping, the way an orchestrator passes them (no os.environ)."""
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    env = {"DATABASE_URL": url, "IM_RETRY_WAIT": "0", "IM_RETRY_ATTEMPTS": "2"}
    if server is not None:
        env.update(sandbox_env(server), IM_RATE="5000")
    env.update(extra)
    return env


def test_exit_codes_are_one_to_one_and_match_the_readme() -> None:
    """One exception class per exit code, and the README's table has exactly those codes (plus
    0, 1 and the two signals)."""
    assert {cls: cls.exit_code for cls in EXIT_CODES} == EXIT_CODES
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert api.Interrupted("x", signum=signal.SIGTERM).exit_code == 143
    table = README.read_text(encoding="utf-8").split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == {0, 1, 130, 143, *EXIT_CODES.values()}


def test_migrate_then_sync_returns_the_report_of_a_finished_run(
    db_url: URL, running_sandbox: Start
) -> None:
    graph = Graph(users=40, seed=81)
    env = environment(db_url, running_sandbox(graph))
    first = api.migrate(env=env)
    assert first.changed
    assert first.before is None
    assert not api.migrate(env=env).changed
    runs: list[int] = []
    seen: list[api.Progress] = []
    report = api.sync(graph.accounts, job="nightly", env=env, on_run=runs.append,
                      on_progress=seen.append)  # fmt: skip
    assert report.outcome == "finished"
    assert runs == [report.run_id]
    assert seen
    assert seen[-1].final
    truth = nonempty(graph.truth(graph.accounts, TYPES))
    counts = report.counts()
    assert counts["items"] == sum(len(edges) for edges in truth.values())
    assert counts["lists_done"] == 3 * len(graph.accounts)
    assert counts["outcome"] == "finished"
    versions = counts["profile_versions"]
    assert isinstance(versions, int)
    assert versions > 0
    assert all(isinstance(v, int | float | str) for v in counts.values())
    doc = api.status("nightly", env=env)
    assert doc["run"]["id"] == report.run_id
    assert doc["run"]["status"] == "done"
    assert api.status("other", env=env) == {"job": "other", "run": None}
    engine = db.make_engine(db_url)
    try:
        assert stored_lists(engine) == truth
    finally:
        engine.dispose()


def test_each_failure_is_the_exception_of_its_exit_code(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """Usage, configuration and database problems raise before anything is fetched."""
    graph = Graph(users=5, seed=82)
    server = running_sandbox(graph)
    env = environment(db_url, server)
    with pytest.raises(api.DatabaseError, match="not migrated") as raised:
        api.sync(graph.accounts, env=env)
    assert raised.value.exit_code == 5
    api.migrate(env=env)
    for bad, match in (
        ({}, "no accounts"),
        ({"accounts": "user_000001"}, "not one string"),
        ({"accounts": ["two words"]}, "accounts: not a UserID .*'two words'"),
        ({"accounts_file": tmp_path / "missing.txt"}, "missing.txt"),
        ({"accounts": graph.accounts, "page_size": 0}, "page_size"),
        ({"accounts": graph.accounts, "types": (4,)}, "types"),
        ({"accounts": graph.accounts, "rate": -1.0}, "rate"),
    ):
        with pytest.raises(api.UsageError, match=match):
            api.sync(env=env, **bad)
    without_app = {k: v for k, v in env.items() if k != "IM_SDKAPPID"}
    with pytest.raises(api.ConfigError, match="IM_SDKAPPID") as config:
        api.sync(graph.accounts, env=without_app)
    assert config.value.exit_code == 3
    with pytest.raises(api.FatalApiError) as fatal:
        api.sync(graph.accounts, env={**env, "IM_SECRET_KEY": "not-the-key"})
    assert fatal.value.exit_code == 4
    down = environment("postgresql://postgres@127.0.0.1:1/nothing", server,
                       DATABASE_RETRY_SECONDS="0")  # fmt: skip
    with pytest.raises(api.DatabaseError) as unreachable:
        api.status(env=down)
    assert "postgresql://" not in str(unreachable.value)
    with pytest.raises(api.UsageError, match="no runs"):
        api.verify("never-synced", env=env)


def test_busy_incomplete_and_interrupted_carry_the_run(db_url: URL, running_sandbox: Start) -> None:
    """JobBusy while another sync holds the job; RunIncomplete (with the report) when the API
    keeps failing, then a clean resume; Interrupted (143) after a SIGTERM-like stop request."""
    graph = Graph(users=20, seed=83)
    healthy = running_sandbox(graph)
    failing = running_sandbox(graph, faults=1.0, fault_kinds=("30006",))
    env = environment(db_url, healthy)
    api.migrate(env=env)
    engine = db.make_engine(db_url)
    try:
        with engine.begin() as conn:
            holder = workers.register(conn, "nightly", "sync", workers.DbClock(conn))
        with pytest.raises(api.JobBusy) as busy:
            api.sync(graph.accounts, job="nightly", env=env)
        assert busy.value.exit_code == 7
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM sync_workers WHERE id = :id"), {"id": holder.id})
    finally:
        engine.dispose()

    with pytest.raises(api.RunIncomplete) as incomplete:
        api.sync(graph.accounts, job="nightly", env=environment(db_url, failing))
    left: Any = incomplete.value.result
    assert isinstance(left, api.SyncReport)
    assert left.outcome == "incomplete"
    assert not left.finished
    lists_open = left.counts()["lists_open"]
    assert isinstance(lists_open, int)
    assert lists_open > 0

    stop = api.StopRequest()
    stop.request(signal.SIGTERM)
    with pytest.raises(api.Interrupted) as interrupted:
        api.sync(graph.accounts, job="nightly", env=env, stop=stop)
    assert interrupted.value.exit_code == 143
    assert interrupted.value.result.run_id == left.run_id
    assert interrupted.value.result.outcome == "interrupted"

    resumed = api.sync(graph.accounts, job="nightly", env=env)
    assert resumed.run_id == left.run_id
    assert resumed.resumed
    assert resumed.outcome == "finished"


def test_verify_returns_a_verification_and_raises_on_mismatch(
    db_url: URL, running_sandbox: Start
) -> None:
    graph = Graph(users=25, seed=84)
    env = environment(db_url, running_sandbox(graph))
    api.migrate(env=env)
    api.sync(graph.accounts, job="nightly", env=env)
    clean = api.verify("nightly", env=env)
    assert clean.problem() is None
    assert clean.report.lists == 3 * len(graph.accounts)
    assert clean.repaired is None
    graph.mutate(seed=1)
    with pytest.raises(api.VerifyMismatch) as mismatch:
        api.verify("nightly", env=env)
    assert mismatch.value.exit_code == 9
    found: Any = mismatch.value.result
    assert isinstance(found, api.Verification)
    assert found.final.mismatches
    repaired = api.verify("nightly", repair=True, env=env)
    assert repaired.repaired is not None
    assert repaired.final.mismatches == []
    assert repaired.document()["repair"]["after"]["disagree"] == 0


def test_work_needs_postgresql_and_returns_none_without_a_run(
    db_url: URL, running_sandbox: Start
) -> None:
    env = environment(db_url, running_sandbox(Graph(users=3, seed=85)))
    api.migrate(env=env)
    if db_url.get_backend_name() == "sqlite":
        with pytest.raises(api.UsageError, match="PostgreSQL"):
            api.work("nightly", env=env)
    else:
        assert api.work("nightly", env=env) is None


@pytest.mark.slow
def test_the_demos_live_follow_reaches_the_tables_and_reconciles(db_url: URL) -> None:
    """After the demo's crawl, ``Demo.follow`` makes a follow-back in the sandbox: its webhook
    posts it to the demo's listener, and the tables hold the mutual pair within a second; the
    next sync of the two accounts reconciles it as seen live, with no drift."""
    env = environment(db_url)
    with api.demo(20, seed=3, rate=5000, env=env) as demo:
        api.sync(demo.accounts, job=demo.job, settings=demo.settings)
        live = demo.follow()
        pair = [live.account, live.to_account]
        again = api.sync(pair, job=demo.live_job, settings=demo.settings)
    assert live.mutual
    assert live.edges == 4
    assert live.seconds is not None
    assert live.seconds < 1.0
    status = api.status(demo.live_job, env=env)
    assert status["run"]["id"] == again.run_id
    found = status["run"]["reconciliation"]
    assert (found["live"], found["drift"], found["live_share"]) == (4, 0, 1.0)


@pytest.mark.slow
def test_report_usersig_and_demo_are_api_calls_too(db_url: URL, tmp_path: Path) -> None:
    """``report`` writes the page and returns its figures (UsageError for an unwritable
    ``out``, before any query); ``usersig`` makes a UserSig from the key (ConfigError without
    it); ``demo`` migrates, serves its sandbox for the block, and ``demo_summary`` reads what
    the demo's run stored."""
    from etl.tencent import usersig

    env = environment(db_url)
    with pytest.raises(api.UsageError, match="does not exist"):
        api.report(tmp_path / "nowhere" / "r.html", env=env)
    with api.demo(12, seed=3, rate=5000, env=env) as demo:
        assert demo.earlier == 0
        assert demo.settings.base_url == demo.url
        report = api.sync(demo.accounts, job=demo.job, settings=demo.settings)
    summary = api.demo_summary(report.run_id, env=env)
    assert sum(summary.edges.values()) == report.items > 0
    assert summary.added == 0  # the first run is the baseline
    with api.demo(12, seed=3, env=env) as again:
        assert again.earlier == 1
    data = api.report(tmp_path / "r.html", "demo", env=env)
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert data.runs_total == 1
    with pytest.raises(api.ConfigError, match="IM_SECRET_KEY"):
        api.usersig(env=env)
    keyed = {**env, "IM_SDKAPPID": "1400000001", "IM_SECRET_KEY": "k" * 32}
    sig = api.usersig(3600, env=keyed)
    now = int(time.time())
    fields = usersig.verify(
        sig, sdkappid=1400000001, identifier="administrator", secret_key="k" * 32, now=now
    )
    assert fields.expire == 3600
