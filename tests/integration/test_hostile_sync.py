"""Whole syncs against a hostile sandbox, on SQLite and PostgreSQL: hostile profile values and
ids, malformed "OK" answers, looping cursors. Each run must end, and be exact for the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from etl.config import RetryPolicy
from etl.errors import MalformedAnswer, TransientApiError
from etl.sandbox import Graph, Sandbox, SandboxConfig, SandboxServer
from etl.sandbox.hostile import HOSTILE_IDS, BigNumber
from etl.tencent.client import FollowClient
from etl.tencent.exact_json import parse_json
from etl.tencent.text import key_problem
from tests.conftest import (
    TYPES,
    api_settings,
    make_client,
    minimum_requests,
    nonempty,
    run,
    stored_lists,
    stored_profiles,
)

Start = Callable[..., SandboxServer]


def storable(truth: dict[tuple[str, int], dict[str, int]]) -> dict[tuple[str, int], dict[str, int]]:
    """The truth without the items whose To_Account cannot be a key (they are quarantined)."""
    return nonempty(
        {
            key: {to: t for to, t in items.items() if key_problem(to) is None}
            for key, items in truth.items()
        }
    )


def plain(value: Any) -> Any:
    """A sandbox value as the client reads it back (a BigNumber is its digit string)."""
    if isinstance(value, BigNumber):
        return value.digits
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def quarantined(engine: sa.Engine, run_id: int) -> list[tuple[str | None, str, str]]:
    """(to_account, kind, reason) of a run's quarantined items."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT to_account, kind, reason FROM quarantined_items WHERE run_id = :run_id"
            ),
            {"run_id": run_id},
        )
        return [(r.to_account, r.kind, r.reason) for r in rows]


def test_hostile_profiles_and_ids_stop_nothing_and_a_second_sync_changes_nothing(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """NUL, lone surrogates, sequences past 64 bits and hostile ids: the run finishes, every
    storable value is stored as documented, the rest is quarantined, and a re-sync is a no-op."""
    graph = Graph(users=150, seed=11, hostile=0.1)
    server = running_sandbox(graph)
    accounts = graph.accounts
    first = run(engine, server, accounts)
    assert first.problem() is None
    truth = graph.truth(accounts, TYPES)
    assert stored_lists(engine) == storable(truth)

    listed = {to for items in truth.values() for to in items}
    hostile = set(graph.hostile_users) & listed
    assert hostile, "no hostile profile was listed: the test would prove nothing"
    profiles = stored_profiles(engine)
    with engine.connect() as conn:
        raw: dict[str, str] = dict(
            conn.execute(
                sa.text(
                    "SELECT user_id, tags_raw FROM profile_snapshots WHERE tags_raw IS NOT NULL"
                )
            ).all()
        )
    unstorable = {to for to, kind, _ in quarantined(engine, first.run_id) if kind == "unstorable"}
    for user in listed - set(HOSTILE_IDS):
        seq, item = graph.profile(user)
        if user not in hostile:
            assert profiles[(user, seq)] == {tag["Tag"]: tag["Value"] for tag in item}
        elif 0 <= seq < 2**64:
            assert (user, seq) in profiles  # stored, sanitised; the exact original beside it
            assert parse_json(raw[user].encode()) == plain(item)
        else:
            assert user in unstorable  # a sequence no column can hold: profile quarantined
            assert not any(key[0] == user for key in profiles)
    ids_listed = {i for i in HOSTILE_IDS if i in listed}
    assert ids_listed, "no hostile id was listed"
    assert {to for to, _, reason in quarantined(engine, first.run_id) if "To_Account" in reason}
    assert first.quarantined >= len(ids_listed)
    assert first.conflicts == 0

    second = run(engine, server, accounts)
    assert second.problem() is None
    assert (second.edges_removed, second.events, second.conflicts) == (0, 0, 0)
    assert stored_lists(engine) == storable(truth)
    assert stored_profiles(engine) == profiles


def test_malformed_answers_on_an_unchanged_graph_remove_nothing(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """5% "OK" answers that are not pages are retried and counted: no removal, no event, exact."""
    graph = Graph(users=120, seed=12)
    accounts = graph.accounts
    baseline = run(engine, running_sandbox(graph), accounts)
    assert baseline.problem() is None
    hostile = running_sandbox(graph, faults=0.05, fault_kinds=("malformed",), fault_seed=3)
    report = run(engine, hostile, accounts)
    assert report.problem() is None
    assert report.malformed > 0
    assert (report.edges_removed, report.events) == (0, 0)
    with engine.connect() as conn:
        events = conn.execute(sa.text("SELECT count(*) FROM follow_edge_events")).scalar_one()
        removed = conn.execute(
            sa.text("SELECT count(*) FROM follow_edges WHERE removed_at IS NOT NULL")
        ).scalar_one()
    assert (events, removed) == (0, 0)
    assert stored_lists(engine) == nonempty(graph.truth(accounts, TYPES))


def test_a_looping_cursor_gives_its_list_up_by_name_and_the_run_ends(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """A list whose cursors cycle is given up with an error naming it; the other lists finish."""
    graph = Graph(users=120, seed=13)
    accounts = graph.accounts
    truth = graph.truth(accounts, TYPES)
    looping = next(a for a in accounts if len(truth[(a, 1)]) >= 3 * 7)  # fans span 3+ pages
    server = running_sandbox(graph, loop_accounts=(looping,))
    report = run(engine, server, accounts)
    loops = {(a, t) for a, t in truth if a == looping and len(truth[(a, t)]) > 7}
    assert report.finished
    problem = report.problem()
    assert problem is not None
    assert f"{len(loops)} of" in str(problem)  # given up: exit 6, named by status
    assert all(looping in failure and "cursor" in failure for failure in report.failures)
    assert len(report.failures) == len(loops)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, status, last_error FROM sync_checkpoints "
                "WHERE status = 'failed'"
            )
        ).all()
    assert {(r.account, r.follow_type) for r in rows} == loops
    assert all("never end" in r.last_error for r in rows)
    others = {key: items for key, items in truth.items() if key not in loops}
    stored = stored_lists(engine)
    assert {key: stored[key] for key in nonempty(others)} == nonempty(others)
    # Each looping list costs its pages once plus one answer that repeats a cursor.
    assert report.requests <= minimum_requests(truth, accounts, 7) + len(loops)


def test_an_answer_trickled_past_the_timeout_is_cut_off(running_sandbox: Start) -> None:
    """A peer that sends each piece well inside the read timeout but the whole answer far
    beyond the request's timeout cannot hold a fetcher: the call times out (transient), and a
    trickle that ends in time is read whole."""
    graph = Graph(users=30, seed=91)
    account = max(graph.accounts, key=lambda a: len(graph.truth([a], (1,))))
    slow = running_sandbox(graph, faults=1.0, fault_kinds=("trickle",), slow_ms=30_000)
    retry = RetryPolicy(attempts=1, max_seconds=60, initial_wait=0, max_wait=0)
    started = time.monotonic()
    with make_client(api_settings(slow, timeout=1.5, retry=retry)) as client:
        with pytest.raises(TransientApiError, match="timed out"):
            client.follow_get(account, 1, "", 1000)
        assert client.answered() == {"timeout": 1}
    assert time.monotonic() - started < 15  # the trickle alone takes 30 s
    brief = running_sandbox(graph, faults=1.0, fault_kinds=("trickle",), slow_ms=300)
    with make_client(api_settings(brief, timeout=5.0, retry=retry)) as client:
        page = client.follow_get(account, 1, "", 1000)
    assert {i.To_Account for i in page.items} == set(graph.truth([account], (1,))[account, 1])


def test_an_answer_past_the_size_cap_is_malformed_and_never_held_whole(
    running_sandbox: Start,
) -> None:
    """max_answer_bytes bounds what one answer may cost in memory: past it the answer is a
    malformed one (retried, counted), whether the length is announced or not."""
    graph = Graph(users=30, seed=92)
    account = max(graph.accounts, key=lambda a: len(graph.truth([a], (1,))))
    retry = RetryPolicy(attempts=1, max_seconds=60, initial_wait=0, max_wait=0)
    server = running_sandbox(graph)  # announces Content-Length
    # In process, a trickled answer comes without a length: the cap counts what arrives.
    unannounced = Sandbox(graph, SandboxConfig(faults=1.0, fault_kinds=("trickle",), slow_ms=200))
    api = api_settings(server, retry=retry)
    for transport in (None, unannounced.transport()):
        with FollowClient.from_settings(api, transport=transport, max_answer_bytes=2_000) as client:
            with pytest.raises(MalformedAnswer, match="larger than 2,000 bytes"):
                client.follow_get(account, 1, "", 1000)
            assert client.malformed == 1
