"""The listener's batch writer (etl.live.writer) on a SQLite file, with an injected ``apply``
that stores the changes it is given: one transaction per batch, notified only after COMMIT;
retries of transient errors; one bad callback failing alone; a bounded queue; a drain."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl.live.metrics import ListenMetrics
from etl.live.writer import BatchWriter, Outcome, Pending
from etl.store.live import Applied, Change


def change(n: int) -> Change:
    return Change("A", f"B{n}", True, n)


class Store:
    """A scratch table the fake apply writes to, and what the writer told about each ticket."""

    def __init__(self, path: Path) -> None:
        self.engine = sa.create_engine(f"sqlite:///{path}")
        with self.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE seen (to_account TEXT)")
        self.outcomes: dict[object, Outcome] = {}
        self.visible_at_notify: dict[object, int] = {}
        self.batches: list[int] = []
        self.fail_next = 0  # transient failures to raise before succeeding
        self.poison = "poison"  # a change to this account fails hard
        self.done = threading.Condition()

    def apply(self, conn: sa.Connection, changes: Sequence[Change]) -> Applied:
        conn.execute(
            sa.text("INSERT INTO seen VALUES (:t)"), [{"t": c.to_account} for c in changes]
        )
        if self.fail_next:
            self.fail_next -= 1
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        if any(c.to_account == self.poison for c in changes):
            raise ValueError("a bug in apply")
        self.batches.append(len(changes))
        return Applied(changes=len(changes), applied=len(changes), added=len(changes))

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM seen").scalar_one())

    def notify(self, batch: Sequence[Pending], outcome: Outcome) -> None:
        rows = self.rows()  # what another connection sees when the callback is answered
        with self.done:
            for pending in batch:
                self.outcomes[pending.ticket] = outcome
                self.visible_at_notify[pending.ticket] = rows
            self.done.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.done:
            assert self.done.wait_for(lambda: len(self.outcomes) >= count, timeout)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store(tmp_path / "writer.db")
    yield made
    made.engine.dispose()


def writer(store: Store, **options: Any) -> BatchWriter:
    return BatchWriter(store.engine, store.notify, ListenMetrics(), apply=store.apply, **options)


def test_waiting_callbacks_commit_in_one_transaction_before_they_are_told(store: Store) -> None:
    """Callbacks queued together are one batch, and each is told only once it is committed."""
    w = writer(store)
    for n in range(5):
        assert w.submit(Pending([change(n), change(n + 100)], ticket=n))
    w.start()
    store.wait_for(5)
    w.close(5.0)
    assert store.batches == [10]
    assert set(store.outcomes.values()) == {Outcome.COMMITTED}
    assert set(store.visible_at_notify.values()) == {10}


def test_a_batch_holds_at_most_the_cap_but_a_callback_is_never_split(store: Store) -> None:
    """Up to max_batch changes a batch; a bigger callback goes alone and whole."""
    w = writer(store, max_batch=3)
    for n in range(5):
        w.submit(Pending([change(n)], ticket=n))
    w.submit(Pending([change(n) for n in range(10, 15)], ticket="big"))
    w.start()
    store.wait_for(6)
    w.close(5.0)
    assert store.batches == [3, 2, 5]


def test_a_transient_error_retries_the_whole_batch(store: Store) -> None:
    """An OperationalError rolls the batch back and runs it again; it commits once."""
    store.fail_next = 2
    w = writer(store)
    w.submit(Pending([change(1), change(2)], ticket=1))
    w.start()
    store.wait_for(1)
    w.close(5.0)
    assert store.outcomes == {1: Outcome.COMMITTED}
    assert store.rows() == 2  # the two failed attempts left nothing
    assert w.metrics.registry.get_sample_value("follow_etl_live_batch_retries_total") == 2


def test_a_callback_that_fails_for_good_fails_alone(store: Store) -> None:
    """A hard error in a batch of several: the others commit, the bad one is FAILED."""
    w = writer(store)
    w.submit(Pending([change(1)], ticket="good"))
    w.submit(Pending([Change("A", "poison", True, 1)], ticket="bad"))
    w.submit(Pending([change(2)], ticket="also good"))
    w.start()
    store.wait_for(3)
    w.close(5.0)
    assert store.outcomes == {
        "good": Outcome.COMMITTED,
        "bad": Outcome.FAILED,
        "also good": Outcome.COMMITTED,
    }
    assert store.rows() == 2


def test_a_full_queue_says_no(store: Store) -> None:
    """Past max_queued changes, submit refuses (the app answers 503); an empty queue takes
    any callback."""
    w = writer(store, max_queued=4)
    assert w.submit(Pending([change(n) for n in range(10)], ticket=0))
    assert not w.submit(Pending([change(11)], ticket=1))
    w.start()
    store.wait_for(1)
    assert w.submit(Pending([change(12)], ticket=2))
    store.wait_for(2)
    w.close(5.0)
    assert not w.submit(Pending([change(13)], ticket=3))  # closed


def test_close_commits_what_is_queued(store: Store) -> None:
    """close drains: everything queued before it is committed."""
    w = writer(store)
    w.start()
    for n in range(50):
        w.submit(Pending([change(n)], ticket=n))
    w.close(5.0)
    assert len(store.outcomes) == 50
    assert set(store.outcomes.values()) == {Outcome.COMMITTED}


def test_a_database_that_stays_away_is_dropped_at_close_in_time(store: Store) -> None:
    """A batch that keeps failing is retried until close, then dropped (never told
    committed), within the close timeout; meanwhile the writer reports the problem."""
    store.fail_next = 10**6
    w = writer(store, max_wait=0.05)
    w.submit(Pending([change(1)], ticket=1))
    w.start()
    deadline = time.monotonic() + 5.0
    while w.problem() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "database is locked" in (w.problem() or "")
    w.close(0.5)
    assert store.outcomes == {1: Outcome.DROPPED}
    assert store.rows() == 0
