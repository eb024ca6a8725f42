"""How big each list of a run is expected to be, so that claims take the biggest first.

A list's size is what its last complete crawl found (``follow_lists.items``, written by the loader
when a list ends; ``from_history`` reads it, the one database read here). A list never crawled to
its end has no such figure: its account's three counts come from ``follow_get_info`` (20 accounts a
call, about one call per 60 lists, paced by the run's budget). A list whose size is known neither
way keeps 0 and is claimed after the others. Sizes only order the work: a wrong one costs time at
the end of the night, never a row.

Lists are sized as they are added to their run (etl.crawl.lister), a chunk at a time, before the
chunk is committed: a list is never claimable without its size, and memory holds one chunk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from etl.errors import ApiError, FatalApiError
from etl.store.rows import Key
from etl.tencent.client import FollowClient
from etl.tencent.info import INFO_BATCH, ask

log = logging.getLogger(__name__)

# A count past this is nonsense, but it only orders the work: kept (as the biggest), not let
# overflow the BIGINT column and stop the sync.
MAX_EXPECTED = 2**62


def from_history(conn: sa.Connection, accounts: Iterable[str]) -> dict[Key, int]:
    """The size each list of ``accounts`` had at its last complete crawl, where there is one."""
    wanted = sorted(set(accounts))
    if not wanted:
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT account, follow_type, items FROM follow_lists "
            "WHERE account IN :accounts AND items IS NOT NULL"
        ).bindparams(sa.bindparam("accounts", expanding=True)),
        {"accounts": wanted},
    )
    return {(account, int(t)): int(n) for account, t, n in rows}


class Asker:
    """Asks follow_get_info for accounts' counts, 20 a call, ``concurrency`` calls at a time
    through the run's paced client. After a fatal answer (a wrong key, say) it asks nothing
    more: the crawl's first call meets the same answer and records it on its list."""

    def __init__(self, client: FollowClient, concurrency: int, stop: threading.Event) -> None:
        self.client, self.stop = client, stop
        self.pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="size")
        self.calls = 0
        self.fatal = False

    def sizes(self, accounts: list[str]) -> dict[Key, int]:
        """The lists' sizes by (account, follow_type) for these accounts; those the API cannot
        count now are left out. Returns early (with what it has) on a stop."""
        batches = [accounts[i : i + INFO_BATCH] for i in range(0, len(accounts), INFO_BATCH)]
        result: dict[Key, int] = {}
        if batches and self.calls == 0:
            # The first call goes alone: a wrong key costs one request, as in the crawl.
            result.update(self._ask(batches.pop(0)))
        # After a fatal answer or a stop, _ask asks nothing more.
        for sizes in self.pool.map(self._ask, batches):
            result.update(sizes)
        return result

    def close(self) -> None:
        """End the threads; calls not yet started are not made."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _ask(self, accounts: list[str]) -> dict[Key, int]:
        if self.fatal or self.stop.is_set():
            return {}
        self.calls += 1
        try:
            answers = ask(self.client, accounts)
        except FatalApiError as exc:
            log.debug("sizing stopped: %s", exc)
            self.fatal = True
            return {}
        except ApiError as exc:
            log.debug("cannot size %d accounts now: %s", len(accounts), exc)
            return {}
        return {
            (account, follow_type): min(count, MAX_EXPECTED)
            for account, answer in answers.items()
            for follow_type, count in answer.counts.items()
        }
