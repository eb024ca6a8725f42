"""The hot-path statements stay index-driven when history is large (PostgreSQL).

A database with 20 earlier runs of 20,000 checkpoints each (and a current run of 20,000, most
of them done), 200,000 follow events and ANALYZE run: each statement is captured as the code
sends it (its text and its real parameters), then EXPLAINed (FORMAT JSON), and its plan must
not scan sync_checkpoints or follow_edge_events sequentially."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from etl.store import cursors, edges, leases, reconcile, runs, status, workers
from etl.store.load import Loader
from etl.store.rows import ListPart, Mode
from etl.store.staging import stage_lists
from etl.tencent import sizes

HISTORY_RUNS = 20
LISTS = 20_000
BIG = ("sync_checkpoints", "follow_edge_events", "follow_edges")

FILL = [
    # 20 ended runs of another job, then the current run of job "nightly".
    f"""INSERT INTO sync_runs (id, job, status, started_at, finished_at, options)
        SELECT r, 'history', 'done', now() - (r || ' days')::interval, now(), '{{}}'
        FROM generate_series(1, {HISTORY_RUNS}) r""",
    f"""INSERT INTO sync_runs (id, job, status, started_at, options)
        VALUES ({HISTORY_RUNS + 1}, 'nightly', 'running', now(), '{{}}')""",
    "SELECT setval(pg_get_serial_sequence('sync_runs', 'id'), 100)",
    f"""INSERT INTO sync_checkpoints (run_id, account, follow_type, status, pages, items,
                                      updated_at, expected_items, failures, last_error)
        SELECT r, 'u' || lpad((i / 3)::text, 6, '0'), 1 + i % 3,
               CASE WHEN r <= {HISTORY_RUNS} OR i % 4 <> 0 THEN 'done'
                    WHEN i % 400 = 0 THEN 'failed'
                    WHEN i % 100 = 0 THEN 'running'
                    ELSE 'pending' END,
               1, i % 50, now(), (i * 7919) % 100000,
               CASE WHEN r = {HISTORY_RUNS + 1} AND i % 400 = 0 THEN 1 ELSE 0 END,
               CASE WHEN i % 400 = 0 THEN 'boom' END
        FROM generate_series(1, {HISTORY_RUNS + 1}) r, generate_series(0, {LISTS - 1}) i""",
    """INSERT INTO sync_run_counters (run_id, shard, pending, running, done, skipped, failed,
                                      retryable, pages, items, moved_at)
        SELECT run_id, 0, count(*) FILTER (WHERE status = 'pending'),
               count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'done'),
               0, count(*) FILTER (WHERE status = 'failed'),
               count(*) FILTER (WHERE status = 'failed' AND failures < 3), sum(pages), sum(items),
               max(updated_at)
        FROM sync_checkpoints GROUP BY run_id""",
    f"""INSERT INTO follow_lists (account, follow_type, baseline_run_id, baseline_at, items)
        SELECT 'u' || lpad((i / 3)::text, 6, '0'), 1 + i % 3, 1, now(), i % 50
        FROM generate_series(0, {LISTS - 1}) i""",
    """INSERT INTO follow_edge_events (account, follow_type, to_account, event, observed_at,
                                       run_id)
        SELECT 'u' || lpad((i % 2000)::text, 6, '0'), 1 + i % 3, 'f' || i,
               CASE WHEN i % 3 = 0 THEN 'removed' ELSE 'added' END,
               now() - ((i % 100) || ' days')::interval, 1 + i % 20
        FROM generate_series(1, 200000) i""",
    # follow_edges of the open lists' accounts: what the claim's "fresh" test looks at.
    """INSERT INTO follow_edges (account, follow_type, to_account, first_seen_at)
        SELECT 'u' || lpad((i % 6667)::text, 6, '0'), 1 + i % 3, 'f' || i, now()
        FROM generate_series(1, 200000) i""",
    "ANALYZE",
]


@pytest.fixture
def history(pg_engine: sa.Engine) -> sa.Engine:
    """The migrated database, filled (see FILL)."""
    with pg_engine.begin() as conn:
        for statement in FILL:
            conn.execute(sa.text(statement))
    return pg_engine


Captured = list[tuple[str, Any]]


def captured(engine: sa.Engine, call: Callable[[sa.Connection], object]) -> Captured:
    """The statements (text and parameters) ``call`` sends, in a transaction rolled back."""
    sent: Captured = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SET", "SHOW", "SELECT PG_", "BEGIN")):
            sent.append((statement, parameters))

    with engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", record)
        try:
            with conn.begin() as tx:
                call(conn)
                tx.rollback()
        finally:
            sa.event.remove(conn, "before_cursor_execute", record)
    return sent


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def plans(engine: sa.Engine, statements: Captured) -> list[list[tuple[str, str | None, str]]]:
    """Per statement, its plan's (node type, relation, index) triples."""
    result = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            if isinstance(parameters, list):  # executemany: one statement a row, one plan
                parameters = parameters[0]
            raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            doc = raw.scalar_one()
            plan = (json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]
            result.append(
                [
                    (n["Node Type"], n.get("Relation Name"), n.get("Index Name", ""))
                    for n in nodes(plan)
                ]
            )
    return result


def assert_index_driven(engine: sa.Engine, call: Callable[[sa.Connection], object]) -> set[str]:
    """Every statement ``call`` sends is planned without a sequential scan of a big table;
    returns the indexes its plans use."""
    statements = captured(engine, call)
    assert statements
    used = set()
    for (statement, _), plan in zip(statements, plans(engine, statements), strict=True):
        print(statement.strip().splitlines()[0][:80], plan)  # pytest -s shows the node types
        scans = [(kind, rel) for kind, rel, _ in plan if kind == "Seq Scan" and rel in BIG]
        assert scans == [], f"{statement}\n{plan}"
        used |= {index for _, rel, index in plan if index and (rel in BIG or rel is None)}
    return used


RUN = HISTORY_RUNS + 1
NOW = datetime.now(UTC)


def owner(engine: sa.Engine) -> str:
    """A live worker on the current run."""
    with engine.begin() as conn:
        me = workers.register(conn, "nightly", "worker", workers.DbClock(conn))
        workers.attach(conn, me, RUN)
    return me.id


def open_keys(engine: sa.Engine, n: int) -> list[tuple[str, int]]:
    """``n`` open lists of the current run."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type FROM sync_checkpoints "
                "WHERE run_id = :r AND status = 'pending' LIMIT :n"
            ),
            {"r": RUN, "n": n},
        )
        return [(a, int(t)) for a, t in rows]


def test_the_claim_reads_the_index_of_open_lists(history: sa.Engine) -> None:
    """The claim (biggest first) and the idle check walk ix_sync_checkpoints_open only."""
    me = owner(history)
    used = assert_index_driven(history, lambda c: leases.claim(c, RUN, me, 64, NOW))
    assert "ix_sync_checkpoints_open" in used
    # The picked rows are updated by ctid, once: a run newer than the statistics once made
    # the planner re-run the pick for every row of the run (360 ms a claim).
    ((statement, parameters),) = captured(history, lambda c: leases.claim(c, RUN, me, 64, NOW))
    (plan,) = plans(history, [(statement, parameters)])
    assert ("Tid Scan", "sync_checkpoints") in [(kind, rel) for kind, rel, _ in plan]
    assert [kind for kind, _, _ in plan].count("Limit") == 1
    used = assert_index_driven(history, lambda c: leases.open_elsewhere(c, RUN, me))
    assert "ix_sync_checkpoints_open" in used


def test_a_batch_reads_its_lists_by_key(history: sa.Engine) -> None:
    """hold and advance (with their counters) touch a batch's lists through the primary key."""
    me = owner(history)
    keys = open_keys(history, 500)

    def batch(conn: sa.Connection) -> None:
        leases.hold(conn, RUN, me, keys)
        parts = [ListPart(a, t, edges={"x": None}, pages=1, next_cursor="n") for a, t in keys]
        cursors.advance(conn, RUN, parts, NOW)

    used = assert_index_driven(history, batch)
    assert used == {"pk_sync_checkpoints"}


def test_a_batch_of_a_run_newer_than_the_statistics_reads_its_lists_by_key(
    history: sa.Engine,
) -> None:
    """A run started after the last ANALYZE (every run, for its first minute) is one the
    planner believes tiny: hold, advance and the baselines still look each list up by key,
    never a join reading every checkpoint of the run (they did: 3 reads of the whole run a
    batch, 14.9M index entries for a 6,000-list sync)."""
    new_run = RUN + 50
    with history.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sync_runs (id, job, status, started_at, options) "
                "VALUES (:r, 'fresh', 'running', now(), '{}')"
            ),
            {"r": new_run},
        )
        conn.execute(
            sa.text(
                "INSERT INTO sync_checkpoints (run_id, account, follow_type, status, pages, "
                "items, updated_at, expected_items, failures) "
                "SELECT :r, 'u' || lpad((i / 3)::text, 6, '0'), 1 + i % 3, 'pending', 0, 0, "
                "now(), 0, 0 FROM generate_series(0, :n) i"
            ),
            {"r": new_run, "n": LISTS - 1},
        )
    me = owner(history)
    keys = [(f"u{i:06d}", 1 + i % 3) for i in range(0, 600, 37)]
    with history.begin() as conn:
        conn.execute(
            sa.text("UPDATE sync_checkpoints SET lease_owner = :me WHERE run_id = :r"),
            {"me": me, "r": new_run},
        )

    def batch(conn: sa.Connection, loader: Loader) -> None:
        leases.hold(conn, new_run, me, keys)
        parts = [
            ListPart(a, t, edges={"x": None}, pages=1, next_cursor="", mode=Mode.FRESH)
            for a, t in keys
        ]
        cursors.advance(conn, new_run, parts, NOW)
        loader.dialect.stage(conn, stage_lists, [(a, t, True, NOW) for a, t in keys])
        starts = [(a, t, NOW) for a, t in keys]
        edges.record_baselines(conn, {"run_id": new_run, "now": NOW}, starts)

    prefixes = ("SELECT c.account", "WITH v AS", "INSERT INTO follow_lists")
    trees: list[dict[str, Any]] = []
    found = explained_in_place(history, batch, prefixes, trees)
    assert len(found) == 3
    for plan, tree in zip(found, trees, strict=True):
        reads = {kind for kind, rel, _ in plan if rel == "sync_checkpoints"} - {"ModifyTable"}
        assert reads <= {"Index Scan", "Index Only Scan", "Tid Scan"}, plan
        # Every read of a checkpoint is by its whole key (a run id alone reads the run).
        for node in nodes(tree):
            if node.get("Relation Name") == "sync_checkpoints" and "Index Name" in node:
                assert "follow_type" in node.get("Index Cond", ""), node


def test_status_reads_counters_and_the_index_of_errors(history: sa.Engine) -> None:
    """The status document reads the run's counters and the partial index of errors."""
    used = assert_index_driven(history, lambda c: status.status_document(c, "nightly"))
    assert used == {"ix_sync_checkpoints_errors"}
    with history.connect() as conn:
        assert runs.counts(conn, RUN) == runs.recount(conn, RUN)


def test_one_account_of_daily_follow_changes_is_index_driven(history: sa.Engine) -> None:
    """A one-account query on the view reads that account's events by index."""

    def query(conn: sa.Connection) -> None:
        conn.execute(
            sa.text(
                "SELECT day, gained, lost FROM daily_follow_changes "
                "WHERE account = :a AND follow_type = 1 ORDER BY day"
            ),
            {"a": "u000042"},
        ).all()

    used = assert_index_driven(history, query)
    assert used == {"ix_follow_edge_events_account_observed_at"}


def test_a_listing_chunk_reads_what_the_run_has_by_key(history: sa.Engine) -> None:
    """A resumed run's listing asks which lists of a chunk the run has, and their sizes from
    history, through primary keys: never a read of every list of the run (etl.startup)."""
    keys = open_keys(history, 200)
    accounts = [account for account, _ in keys]
    used = assert_index_driven(
        history,
        lambda c: (runs.present(c, RUN, keys), sizes.from_history(c, accounts)),
    )
    assert used <= {"pk_sync_checkpoints", "pk_follow_lists"}
    assert "pk_sync_checkpoints" in used


def test_the_claim_takes_touched_lists_first_from_the_index_without_a_sort(
    history: sa.Engine,
) -> None:
    """With touched lists in the run (sync --changed-first), the claim still walks
    ix_sync_checkpoints_open (backwards: touched first, biggest first) and sorts nothing; the
    lists it takes are the touched ones, biggest first."""
    with history.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE sync_checkpoints SET touched = true WHERE run_id = :r "
                "AND status = 'pending' AND expected_items % 7 = 0"
            ),
            {"r": RUN},
        )
        conn.execute(sa.text("ANALYZE sync_checkpoints"))
        wanted = [
            (a, int(t))
            for a, t in conn.execute(
                sa.text(
                    "SELECT account, follow_type FROM sync_checkpoints WHERE run_id = :r "
                    "AND touched AND status = 'pending' "
                    "ORDER BY expected_items DESC, account, follow_type LIMIT 64"
                ),
                {"r": RUN},
            )
        ]
    me = owner(history)
    used = assert_index_driven(history, lambda c: leases.claim(c, RUN, me, 64, NOW))
    assert "ix_sync_checkpoints_open" in used
    ((statement, parameters),) = captured(history, lambda c: leases.claim(c, RUN, me, 64, NOW))
    (plan,) = plans(history, [(statement, parameters)])
    assert "Sort" not in [kind for kind, _, _ in plan], plan
    with history.begin() as conn:
        claimed = leases.claim(conn, RUN, me, 64, NOW)
    assert all(state.touched for state in claimed)
    assert [s.expected for s in claimed] == sorted((s.expected for s in claimed), reverse=True)
    assert {s.expected for s in claimed} == set(_expected(history, wanted))


def _expected(engine: sa.Engine, keys: list[tuple[str, int]]) -> list[int]:
    with engine.connect() as conn:
        return [
            int(
                conn.execute(
                    sa.text(
                        "SELECT expected_items FROM sync_checkpoints WHERE run_id = :r "
                        "AND account = :a AND follow_type = :t"
                    ),
                    {"r": RUN, "a": a, "t": t},
                ).scalar_one()
            )
            for a, t in keys
        ]


def test_reconciling_completed_lists_reads_their_events_by_index(history: sa.Engine) -> None:
    """The reconciliation and the baselines of a batch's ending lists (some touched by
    callbacks) read follow_edge_events through its (account, observed_at) index, list by list:
    never a scan of the events."""
    with history.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE follow_lists SET crawled_at = now() - interval '2 days', "
                "live_from = now() - interval '1 day' WHERE account < 'u000050'"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO follow_edge_events (account, follow_type, to_account, event, "
                "observed_at, run_id, source) SELECT 'u' || lpad((i % 50)::text, 6, '0'), "
                "1 + i % 3, 'c' || i, 'added', now() - interval '1 hour', NULL, 'callback' "
                "FROM generate_series(1, 5000) i"
            )
        )
        conn.execute(sa.text("ANALYZE follow_lists"))
        conn.execute(sa.text("ANALYZE follow_edge_events"))
    keys = [(f"u{i:06d}", t) for i in range(0, 400, 2) for t in (1, 2, 3)]

    def end(conn: sa.Connection, loader: Loader) -> None:
        loader.dialect.stage(conn, stage_lists, [(a, t, False, NOW) for a, t in keys])
        loader.dialect.analyze(conn, "stage_lists")
        params = {"run_id": RUN, "now": NOW, "events_from": NOW - reconcile.EVENTS_MARGIN}
        assert reconcile.record(conn, loader.dialect, params) > 0
        edges.record_baselines(conn, {"run_id": RUN, "now": NOW}, [(a, t, NOW) for a, t in keys])

    found = explained_in_place(
        history, end, ("WITH listed", "INSERT INTO follow_lists", "UPDATE follow_lists")
    )
    assert len(found) == 3
    # The baselines' update finds each list's row by its key, never by reading follow_lists.
    assert ("Index Scan", "follow_lists", "pk_follow_lists") in found[2], found[2]
    for plan in found:
        # Index scans name their index; a bitmap heap scan's index is its child's.
        events = {index for _, rel, index in plan if rel == "follow_edge_events" and index}
        bitmaps = {index for kind, _, index in plan if kind == "Bitmap Index Scan"}
        assert events | bitmaps <= {"ix_follow_edge_events_account_observed_at"}, plan


def test_a_batch_of_lists_with_a_baseline_writes_edges_and_events_by_key(
    history: sa.Engine,
) -> None:
    """The statement that writes a batch's edges with their 'added' events (lists with a
    baseline, searched and fresh) looks each staged edge up by key: no scan of follow_edges
    or follow_edge_events."""
    keys = open_keys(history, 300)
    parts = [
        ListPart(
            a,
            t,
            edges={f"f{i}": 1_700_000_000 for i in range(n * 7, n * 7 + 40)},
            pages=1,
            next_cursor="n",
            mode=Mode.FRESH if n % 3 == 0 else Mode.FIRST,
            baseline=True,
        )
        for n, (a, t) in enumerate(keys)
    ]

    def batch(conn: sa.Connection, loader: Loader) -> None:
        assert edges.write(conn, loader.dialect, parts, {"run_id": RUN, "now": NOW}) > 0

    found = explained_in_place(history, batch, ("WITH written",))
    assert len(found) == 2
    for plan in found:
        reads = {
            (kind, bool(index))
            for kind, rel, index in plan
            if rel == "follow_edges" and kind != "ModifyTable"
        }
        assert reads <= {("Index Scan", True), ("Index Only Scan", True)}, plan


def explained_in_place(
    engine: sa.Engine,
    call: Callable[[sa.Connection, Loader], object],
    prefixes: tuple[str, ...],
    trees: list[dict[str, Any]] | None = None,
) -> list[list[tuple[str, str | None, str | None]]]:
    """The plans of the statements ``call`` sends that begin with ``prefixes``, EXPLAINed on
    its own connection (they read its staging tables), none of them scanning a big table
    sequentially; ``call``'s transaction is rolled back."""
    loader = Loader("postgresql")
    sent: Captured = []

    def record(c: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().startswith(prefixes):
            sent.append((statement, parameters))

    found = []
    with engine.connect() as conn, conn.begin() as tx:
        loader.prepare(conn)
        sa.event.listen(conn, "before_cursor_execute", record)
        call(conn, loader)
        sa.event.remove(conn, "before_cursor_execute", record)
        for statement, parameters in sent:
            if isinstance(parameters, list):  # executemany: one statement a row, one plan
                parameters = parameters[0]
            raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            doc = raw.scalar_one()
            plan = (json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"]
            if trees is not None:  # the whole plans, for the caller to walk
                trees.append(plan)
            nodes_found = [
                (n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes(plan)
            ]
            print(statement.strip().splitlines()[0][:60], nodes_found)  # pytest -s shows them
            scans = [k for k, rel, _ in nodes_found if k == "Seq Scan" and rel in BIG]
            assert scans == [], f"{statement}\n{nodes_found}"
            found.append(nodes_found)
        tx.rollback()
    return found
