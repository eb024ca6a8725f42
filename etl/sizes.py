"""How big each list of a run is expected to be, so that claims take the biggest first.

A list's size is what its last complete crawl found (``follow_lists.items``, written by the
loader when a list ends). A list never crawled to its end has no such figure: the sync asks
``follow_get_info`` for its account's three counts (20 accounts a call, about one call per 60
lists, paced by the run's budget) before the crawl starts. A list whose size is known neither
way keeps 0 and is claimed after the others. Sizes only order the work: a wrong one costs time
at the end of the night, never a row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import db
from etl.client import FollowClient
from etl.errors import ApiError, FatalApiError
from etl.info import INFO_BATCH, ask

log = logging.getLogger(__name__)

UPDATE_CHUNK = 5000  # expected sizes written per statement
# A count past this is nonsense, but it only orders the work: kept (as the biggest), not let
# overflow the BIGINT column and stop the sync.
MAX_EXPECTED = 2**62

_FROM_HISTORY = sa.text("""
UPDATE sync_checkpoints SET expected_items = l.items
FROM follow_lists l
WHERE sync_checkpoints.run_id = :run_id AND sync_checkpoints.status = 'pending'
  AND sync_checkpoints.expected_items = 0
  AND l.account = sync_checkpoints.account AND l.follow_type = sync_checkpoints.follow_type
  AND l.items IS NOT NULL
""")

# Accounts with a list of the run that has no size yet and no complete crawl to go by.
_UNSIZED = sa.text("""
SELECT DISTINCT c.account FROM sync_checkpoints c
WHERE c.run_id = :run_id AND c.status = 'pending' AND c.expected_items = 0
  AND NOT EXISTS (SELECT 1 FROM follow_lists l
                  WHERE l.account = c.account AND l.follow_type = c.follow_type
                    AND l.items IS NOT NULL)
ORDER BY c.account
""")

# By the primary key alone: with a status condition the planner may take the partial index of
# open lists (and read all of the run's open lists for each one).
_SET = sa.text("""
UPDATE sync_checkpoints SET expected_items = :items
WHERE run_id = :run_id AND account = :account AND follow_type = :follow_type
""")


def from_history(conn: sa.Connection, run_id: int) -> int:
    """Give the run's pending lists the size their last complete crawl found; how many."""
    return max(conn.execute(_FROM_HISTORY, {"run_id": run_id}).rowcount, 0)


def size_run(
    engine: Engine,
    client: FollowClient,
    run_id: int,
    *,
    concurrency: int,
    stop: threading.Event,
    db_seconds: float,
) -> int:
    """Size the run's lists: from history, then follow_get_info for the rest; how many lists
    got a size. An account the API cannot count now stays unsized (the crawl goes on)."""
    sized = db.retrying(
        engine,
        lambda conn: from_history(conn, run_id),
        what="sizing lists",
        stop=stop,
        seconds=db_seconds,
    )
    with engine.connect() as conn:
        accounts = [row[0] for row in conn.execute(_UNSIZED, {"run_id": run_id})]
    if not accounts:
        return sized
    batches = [accounts[i : i + INFO_BATCH] for i in range(0, len(accounts), INFO_BATCH)]
    rows = list(_counts(client, batches, concurrency, stop))
    for start in range(0, len(rows), UPDATE_CHUNK):
        chunk = [{**row, "run_id": run_id} for row in rows[start : start + UPDATE_CHUNK]]

        def write(conn: sa.Connection, chunk: list[dict[str, Any]] = chunk) -> None:
            conn.execute(_SET, chunk)

        db.retrying(engine, write, what="sizing lists", stop=stop, seconds=db_seconds)
    log.info(
        "sized %d lists from earlier crawls and %d accounts from follow_get_info",
        sized,
        len(accounts),
    )
    return sized + len(rows)


def _counts(
    client: FollowClient, batches: list[list[str]], concurrency: int, stop: threading.Event
) -> Iterator[dict[str, Any]]:
    """(account, follow_type, items) rows from follow_get_info. The first call goes alone: a
    wrong key costs one request, as in the crawl."""
    if not batches:
        return
    first = _ask_one(client, batches[0])
    if first is None:
        return
    yield from first
    pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="size")
    try:
        for rows in pool.map(lambda batch: _ask_one(client, batch, stop), batches[1:]):
            if rows is None:  # fatal: the crawl's first call will meet it and record it
                return
            yield from rows
    finally:  # a fatal answer or a stop: the calls not yet started are not made
        pool.shutdown(wait=True, cancel_futures=True)


def _ask_one(
    client: FollowClient, accounts: list[str], stop: threading.Event | None = None
) -> list[dict[str, Any]] | None:
    """Counts of ``accounts`` as rows; [] when the API cannot say now; None on a fatal answer
    (a wrong key, say): sizing ends, and the crawl's first call meets it and records it on
    its list, where ``status`` shows it."""
    if stop is not None and stop.is_set():
        return []
    try:
        answers = ask(client, accounts)
    except FatalApiError as exc:
        log.debug("sizing stopped: %s", exc)
        return None
    except ApiError as exc:
        log.debug("cannot size %d accounts now: %s", len(accounts), exc)
        return []
    return [
        {"account": account, "follow_type": follow_type, "items": min(count, MAX_EXPECTED)}
        for account, answer in answers.items()
        for follow_type, count in answer.counts.items()
    ]
