"""The crawl's side of live callbacks, on SQLite and PostgreSQL: a provisional follow time
replaced by the API's, follow_lists.crawled_at, the reconciliation of each completed list with
the callbacks (live, drift, live_from moved past the crawl's start), `sync --changed-first`,
and the figures status, metrics and the report show.

Callbacks are written here as etl.store.live.apply writes them (a provisional edge, an event
with source 'callback' and no run, live_from set where it is NULL), by the database's clock; the
sandbox's graph changes for real between (or during) syncs, so each crawl checks them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl.cli import build_parser, output
from etl.crawl.lister import Lister
from etl.crawl.messages import Fetched
from etl.crawl.writer import Writer
from etl.metrics import Metrics
from etl.report import build_report
from etl.results import SyncReport, SyncRequest
from etl.sandbox import Graph, Sandbox, SandboxConfig
from etl.store import leases, reconcile, runs, status, workers
from etl.store.dialect import dialect_of
from etl.store.load import Loader
from etl.store.rows import ListPart, Mode
from etl.store.schema import follow_edge_events, follow_edges, follow_lists, sync_checkpoints
from etl.sync import sync
from etl.tencent.client import FollowClient
from tests.conftest import TYPES, nonempty, sandbox_client, stored_lists

Key = tuple[str, int]
Change = tuple[str, int, str, str]  # (account, follow_type, to_account, added | removed)
JOB = "live"


def diff(before: dict[Key, dict[str, int]], after: dict[Key, dict[str, int]]) -> set[Change]:
    """The edge changes from ``before`` to ``after``, one per list and edge."""
    changes = set()
    for key in before.keys() | after.keys():
        old, new = set(before.get(key, {})), set(after.get(key, {}))
        changes |= {(*key, to, "added") for to in new - old}
        changes |= {(*key, to, "removed") for to in old - new}
    return changes


def callback(engine: sa.Engine, change: Change) -> None:
    """One callback change applied to a kept list, as etl.store.live.apply applies it."""
    account, follow_type, to_account, event = change
    key = {"account": account, "follow_type": follow_type, "to_account": to_account}
    e, f = follow_edges.c, follow_lists.c
    with engine.begin() as conn:
        d = dialect_of(conn)
        now = d.now()
        if event == "added":
            made = {"follow_time": now, "changed_at": now, "time_provisional": True}
            changed = conn.execute(
                d.insert(follow_edges)
                .values(**key, first_seen_at=now, **made)
                .on_conflict_do_update(
                    index_elements=[e.account, e.follow_type, e.to_account],
                    set_={"removed_at": None, **made},
                    where=e.removed_at.is_not(None),
                )
            ).rowcount
        else:
            changed = conn.execute(
                sa.update(follow_edges)
                .where(*(e[k] == v for k, v in key.items()), e.removed_at.is_(None))
                .values(removed_at=now, changed_at=now)
            ).rowcount
        if not changed:
            return  # already so: no event
        conn.execute(
            sa.insert(follow_edge_events).values(
                **key, event=event, observed_at=now, run_id=None, source="callback"
            )
        )
        conn.execute(
            sa.update(follow_lists)
            .where(f.account == account, f.follow_type == follow_type, f.live_from.is_(None))
            .values(live_from=now)
        )


def feed(engine: sa.Engine, changes: Iterable[Change]) -> None:
    """Callbacks for ``changes``, one transaction each."""
    for change in sorted(changes):
        callback(engine, change)


def per_list(changes: Iterable[Change]) -> dict[Key, list[int]]:
    """Changes counted per list: [live, added, removed] with every change delivered live."""
    counts: dict[Key, list[int]] = {}
    for account, follow_type, _, _ in changes:
        counts.setdefault((account, follow_type), [0, 0, 0])[0] += 1
    return counts


def reconciled(engine: sa.Engine, run_id: int) -> dict[Key, tuple[int, int, int]]:
    """The run's list_reconciliation rows: (account, type) -> (live, added, removed)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, live, added, removed FROM list_reconciliation "
                "WHERE run_id = :r"
            ),
            {"r": run_id},
        )
        return {(a, int(t)): (int(live), int(ad), int(rm)) for a, t, live, ad, rm in rows}


def live_from(engine: sa.Engine) -> dict[Key, datetime]:
    """The lists whose live_from is set, and when it is."""
    f = follow_lists.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(f.account, f.follow_type, f.live_from).where(f.live_from.is_not(None))
        )
        return {(a, int(t)): _utc(when) for a, t, when in rows}


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def provisional(engine: sa.Engine) -> int:
    """How many stored edges keep a provisional follow time."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(follow_edges)
                .where(follow_edges.c.time_provisional)
            ).scalar_one()
        )


class World:
    """A sandbox graph, its in-process client, and the syncs of its accounts."""

    def __init__(self, engine: sa.Engine, users: int = 40, seed: int = 171) -> None:
        self.engine = engine
        self.graph = Graph(users=users, seed=seed)
        self.accounts = self.graph.accounts
        self.client: FollowClient = sandbox_client(Sandbox(self.graph, SandboxConfig()))

    def truth(self) -> dict[Key, dict[str, int]]:
        """What a complete crawl of the accounts must store now."""
        return self.graph.truth(self.accounts, TYPES)

    def sync(
        self, writer: type[Writer] = Writer, accounts: list[str] | None = None, **request: Any
    ) -> SyncReport:
        """A sync of ``accounts`` (default: all), in small pages; it must finish."""
        report = sync(
            self.engine,
            self.client,
            SyncRequest(job=JOB, accounts=accounts or self.accounts, page_size=7, **request),
            writer=writer,
        )
        assert report.problem() is None
        return report

    def mutate(self, seed: int) -> set[Change]:
        """A real change of the graph; the edge changes it made."""
        before = self.truth()
        self.graph.mutate(seed, unfollow=0.08, follow=0.08, profile=0.0)
        changes = diff(before, self.truth())
        assert changes, "the mutation changed nothing: the test would prove nothing"
        return changes


@pytest.fixture
def world(engine: sa.Engine) -> World:
    """A world whose accounts had one complete sync (every list a baseline)."""
    made = World(engine)
    made.sync()
    return made


def test_callback_changes_the_crawl_confirms_are_live_with_no_drift(world: World) -> None:
    """Every change delivered by a callback: each list's row counts them live, drift 0; the
    provisional follow times become the API's FollowTime; live_from is cleared; the lists'
    crawled_at is their crawl's start."""
    changes = world.mutate(1)
    feed(world.engine, changes)
    assert provisional(world.engine) > 0
    assert set(live_from(world.engine)) == {(a, t) for a, t, _, _ in changes}

    report = world.sync()
    expected = {key: tuple(n) for key, n in per_list(changes).items()}
    assert reconciled(world.engine, report.run_id) == expected
    assert stored_lists(world.engine) == nonempty(world.truth())  # follow times included
    assert provisional(world.engine) == 0
    assert live_from(world.engine) == {}
    with world.engine.connect() as conn:
        summary = reconcile.summary(conn, report.run_id)
        wrong = conn.execute(
            sa.text(
                "SELECT count(*) FROM follow_lists f JOIN sync_checkpoints c "
                "ON c.account = f.account AND c.follow_type = f.follow_type AND c.run_id = :r "
                "WHERE f.crawled_at IS NULL OR f.crawled_at <> c.crawl_started_at"
            ),
            {"r": report.run_id},
        ).scalar_one()
    assert wrong == 0
    assert summary == {
        "lists": len(expected),
        "live": len(changes),
        "missed_added": 0,
        "missed_removed": 0,
        "drift": 0,
        "live_share": 1.0,
        "touched": 0,
    }


def test_changes_the_callbacks_missed_are_the_drift_of_their_lists(world: World) -> None:
    """Callbacks dropped for one follow and one unfollow: the crawl adds and removes exactly
    those, counted as drift on their lists; every other change counts live."""
    changes = world.mutate(2)
    added = min(c for c in changes if c[3] == "added")
    removed = min(c for c in changes if c[3] == "removed")
    feed(world.engine, changes - {added, removed})

    report = world.sync()
    counts = per_list(changes - {added, removed})
    counts.setdefault(added[:2], [0, 0, 0])[1] += 1
    counts.setdefault(removed[:2], [0, 0, 0])[2] += 1
    assert reconciled(world.engine, report.run_id) == {k: tuple(n) for k, n in counts.items()}
    assert stored_lists(world.engine) == nonempty(world.truth())
    with world.engine.connect() as conn:
        doc = status.status_document(conn, JOB)["run"]["reconciliation"]
    live = len(changes) - 2
    assert (doc["live"], doc["missed_added"], doc["missed_removed"], doc["drift"]) == (
        live,
        1,
        1,
        2,
    )
    assert doc["live_share"] == pytest.approx(live / (live + 2))


def test_a_sync_with_nothing_changed_reconciles_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """No change and no callback: no list_reconciliation row, nothing left touched, and
    `status` prints no line about callbacks."""
    report = world.sync()
    assert reconciled(world.engine, report.run_id) == {}
    assert live_from(world.engine) == {}
    with world.engine.connect() as conn:
        assert reconcile.summary(conn, report.run_id)["live_share"] is None
        output.status(JOB, status.status_document(conn, JOB))
    text = capsys.readouterr().out
    assert "done" in text
    assert "reconciled" not in text
    assert "callbacks" not in text


def test_a_provisional_time_of_a_removed_edge_is_replaced_when_the_crawl_revives_it(
    world: World,
) -> None:
    """A list whose current edges callbacks all removed starts fresh; the crawl lists them
    again (drift: added), each with the API's FollowTime, no longer provisional."""
    key = max(world.truth().items(), key=lambda item: len(item[1]))[0]
    gone = {(*key, to, "removed") for to in world.truth()[key]}
    e = follow_edges.c
    with world.engine.begin() as conn:  # as callbacks left them: provisional times
        conn.execute(
            sa.update(follow_edges)
            .where(e.account == key[0], e.follow_type == key[1])
            .values(time_provisional=True, follow_time=datetime.now(UTC))
        )
    feed(world.engine, gone)
    report = world.sync()
    assert stored_lists(world.engine) == nonempty(world.truth())
    assert provisional(world.engine) == 0
    assert reconciled(world.engine, report.run_id)[key] == (len(gone), len(gone), 0)


def test_callbacks_during_a_crawl_are_the_next_crawls_to_reconcile(world: World) -> None:
    """The graph changes while a list is being crawled (a run of that list alone: after its
    pages were fetched, before its last batch is written), and every change arrives as a
    callback then. The crawl keeps them (it undoes nothing newer than its start) and moves the
    list's live_from to the first callback's time, not past it; the next sync counts every
    change live on its list, with no drift."""
    twin = Graph(users=40, seed=171)
    before = twin.truth(twin.accounts, TYPES)
    twin.mutate(3, unfollow=0.08, follow=0.08, profile=0.0)
    target = min((a, t) for a, t, _, _ in diff(before, twin.truth(twin.accounts, TYPES)))
    seen: dict[str, datetime] = {}

    class Meanwhile(Writer):
        def _write(self, conn: sa.Connection, batch: list[Any]) -> Any:
            last = [i for i in batch if isinstance(i, Fetched) and i.claim.key == target]
            if last and last[-1].next_cursor == "" and not seen:
                seen["started"] = _utc(last[-1].claim.task.started or datetime.now(UTC))
                feed(self.engine, world.mutate(3))
                seen["fed"] = _utc(datetime.now(UTC))
            return super()._write(conn, batch)

    second = world.sync(writer=Meanwhile, accounts=[target[0]], types=(target[1],))
    assert seen, "the target list's last page never came"
    assert target not in reconciled(world.engine, second.run_id)
    pending = live_from(world.engine)
    assert seen["started"] <= pending[target] <= seen["fed"]
    edges = {key: set(items) for key, items in stored_lists(world.engine).items()}
    assert edges == {key: set(items) for key, items in nonempty(world.truth()).items()}

    third = world.sync()
    rows = reconciled(world.engine, third.run_id)
    changes = diff(before, world.truth())
    assert rows == {k: tuple(n) for k, n in per_list(changes).items()}
    assert live_from(world.engine) == {}
    assert provisional(world.engine) == 0


def test_changed_first_lists_and_claims_touched_lists_first_then_biggest(
    engine: sa.Engine,
) -> None:
    """With --changed-first the lister marks the lists callbacks changed since their last
    complete crawl (new ones as they go in, open ones a resumed run has); a claim takes them
    first, biggest first, then the others, biggest first."""
    sizes = {(f"u{i}", 1): 10 * i for i in range(1, 7)}
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for (account, follow_type), items in sizes.items():
            conn.execute(
                sa.insert(follow_lists).values(
                    account=account,
                    follow_type=follow_type,
                    baseline_run_id=1,
                    baseline_at=now,
                    items=items,
                    live_from=now if account in ("u1", "u3") else None,
                )
            )
        run_id = runs.start_run(conn, JOB, {}, now)
        me = workers.register(conn, JOB, "sync", workers.DbClock(conn))
    client = sandbox_client(Sandbox(Graph(users=5, seed=5), SandboxConfig()))

    def listed(lists: list[Key], changed_first: bool) -> None:
        stop = threading.Event()
        lister = Lister(
            engine, client, run_id, lists, clock=lambda: now, stop=stop, changed_first=changed_first
        )
        lister.run()
        assert lister.error is None

    listed(list(sizes)[:4], changed_first=True)  # u5, u6 come in a later invocation
    with engine.begin() as conn:  # a callback touches u5 before it is listed, u4 after
        conn.execute(
            sa.update(follow_lists)
            .where(follow_lists.c.account.in_(["u4", "u5"]))
            .values(live_from=now)
        )
    listed(list(sizes), changed_first=True)
    c = sync_checkpoints.c
    with engine.connect() as conn:
        touched = set(
            conn.execute(sa.select(c.account).where(c.run_id == run_id, c.touched)).scalars()
        )
    assert touched == {"u1", "u3", "u4", "u5"}

    with engine.begin() as conn:
        first = leases.claim(conn, run_id, me.id, 3, now)
        rest = leases.claim(conn, run_id, me.id, 10, now)
    assert [s.account for s in first] == ["u5", "u4", "u3"]
    assert [s.account for s in rest] == ["u1", "u6", "u2"]
    assert [s.touched for s in first + rest] == [True, True, True, True, False, False]


def test_a_sync_with_changed_first_marks_the_touched_lists_and_finishes(world: World) -> None:
    """`sync --changed-first` end to end: the lists callbacks changed are marked touched in the
    run, the others not, and the run reconciles them as any other."""
    changes = world.mutate(4)
    feed(world.engine, changes)
    report = world.sync(changed_first=True)
    c = sync_checkpoints.c
    with world.engine.connect() as conn:
        touched = {
            (a, int(t))
            for a, t in conn.execute(
                sa.select(c.account, c.follow_type).where(c.run_id == report.run_id, c.touched)
            )
        }
    assert touched == set(per_list(changes))
    assert set(reconciled(world.engine, report.run_id)) == touched


def test_status_metrics_and_report_show_the_reconciliation(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a run with one missed follow: status (document and text), the metrics textfile and
    the report's "Live vs crawl" table show its lists, live changes, drift and live share, and
    the lists touched since (one callback after the run)."""
    changes = world.mutate(5)
    missed = min(c for c in changes if c[3] == "added")
    feed(world.engine, changes - {missed})
    report = world.sync()
    callback(world.engine, (*missed[:3], "removed"))  # a later change, not crawled yet
    live = len(changes) - 1
    lists = len(per_list(changes))
    share = live / (live + 1)

    with world.engine.connect() as conn:
        doc = status.status_document(conn, JOB)
    assert doc["run"]["reconciliation"] == {
        "lists": lists,
        "live": live,
        "missed_added": 1,
        "missed_removed": 0,
        "drift": 1,
        "live_share": pytest.approx(share),
        "touched": 1,
    }
    output.status(JOB, doc)
    text = capsys.readouterr().out
    assert (
        f"{lists} lists reconciled: {live} changes seen live, drift 1 (1 added, 0 removed "
        f"by the crawl), {share:.1%} seen live"
    ) in text
    assert "1 lists changed since their last complete crawl" in text

    metrics = Metrics(world.engine, JOB, textfile=tmp_path / "etl.prom")
    metrics.refresh()
    prom = (tmp_path / "etl.prom").read_text()
    for line in (
        f'follow_etl_reconciled_lists{{job="{JOB}"}} {float(lists)}',
        f'follow_etl_live_changes{{job="{JOB}"}} {float(live)}',
        f'follow_etl_drift_edges{{change="added",job="{JOB}"}} 1.0',
        f'follow_etl_drift_edges{{change="removed",job="{JOB}"}} 0.0',
        f'follow_etl_live_share{{job="{JOB}"}} {share!r}',
        f'follow_etl_lists_touched_live{{job="{JOB}"}} 1.0',
    ):
        assert line in prom, prom

    html = build_report(world.engine, JOB)
    table = html.split('id="live-vs-crawl"', 1)[1].split("</section>", 1)[0]
    row = "".join(
        f"<td>{cell}</td>" for cell in (f"#{report.run_id}", lists, live, 1, 0, 1, f"{share:.1%}")
    )
    assert row in table


def test_the_cli_takes_changed_first() -> None:
    """`sync --changed-first` is an option of its own, off by default."""
    parser = build_parser()
    assert parser.parse_args(["sync", "--account", "a", "--changed-first"]).changed_first
    assert not parser.parse_args(["sync", "--account", "a"]).changed_first


def test_an_edge_a_callback_adds_while_a_batch_writes_it_is_no_crawl_event(
    pg_engine: sa.Engine,
) -> None:
    """PostgreSQL, two sessions: a callback adds an edge (uncommitted) that a crawl's batch
    lists too; the batch waits for it on the edge's key, then finds it changed after its crawl
    began. The crawl leaves the callback's edge as it is and records no 'added' event of its
    own: one change, one event (the callback's)."""
    world = World(pg_engine)
    world.sync()
    account = world.accounts[0]
    listed = world.graph.list_items(account, 2)
    new = next(to for to in world.accounts if to != account and to not in listed)
    with pg_engine.begin() as conn:
        began: datetime = conn.execute(
            sa.select(sa.func.now() - sa.text("interval '1 minute'"))
        ).scalar_one()
        run_id = runs.start_run(conn, "other", {}, began)
        runs.add_lists(conn, run_id, [(account, 2)], began)
    part = ListPart(
        account,
        2,
        edges={**listed, new: 1_700_000_000},
        pages=1,
        next_cursor="next",
        mode=Mode.FIRST,
        baseline=True,
        started=began,
    )
    outcome: dict[str, Any] = {}

    def batch() -> None:
        loader = Loader("postgresql")
        with pg_engine.begin() as conn:
            outcome["events"] = loader.write(conn, run_id, [part], [], began).events

    with pg_engine.connect() as listener:
        with listener.begin():
            callback_conn_add(listener, account, new)
            writer = threading.Thread(target=batch)
            writer.start()
            waiting(pg_engine)
        writer.join(30)
    assert outcome == {"events": 0}
    e = follow_edges.c
    with pg_engine.connect() as conn:
        kinds = conn.execute(
            sa.select(follow_edge_events.c.source).where(
                follow_edge_events.c.account == account,
                follow_edge_events.c.to_account == new,
            )
        ).scalars()
        assert list(kinds) == ["callback"]
        assert conn.execute(
            sa.select(e.time_provisional).where(
                e.account == account, e.follow_type == 2, e.to_account == new
            )
        ).scalar_one()


def callback_conn_add(conn: sa.Connection, account: str, to_account: str) -> None:
    """A callback's follow of ``to_account`` on (account, 2), in the caller's transaction."""
    now = sa.func.statement_timestamp()
    conn.execute(
        sa.insert(follow_edges).values(
            account=account,
            follow_type=2,
            to_account=to_account,
            follow_time=now,
            first_seen_at=now,
            changed_at=now,
            time_provisional=True,
        )
    )
    conn.execute(
        sa.insert(follow_edge_events).values(
            account=account,
            follow_type=2,
            to_account=to_account,
            event="added",
            observed_at=now,
            source="callback",
        )
    )


def waiting(engine: sa.Engine, seconds: float = 20.0) -> None:
    """Until a session of this database waits for another's transaction."""
    deadline = time.monotonic() + seconds
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            found = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            if found:
                return
            time.sleep(0.02)
    raise AssertionError("the batch never waited for the callback's transaction")
