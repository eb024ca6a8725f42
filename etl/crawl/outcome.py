"""How a list's crawl by one process ends, and what each ending does to its checkpoint.

Every claimed list ends exactly once, with one Outcome: the fetcher that held it decides which
(from the exception that stopped it, or none), the writer applies the Outcome's Effect inside
the transaction of the batch that carries it, and the coordinator then forgets the claim.
Every ending gives the lease back: what a list needs next is decided by its status alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from etl.errors import (
    AccountNotFound,
    FatalApiError,
    RequestRejected,
    Stopped,
    TransientApiError,
)


class Outcome(enum.Enum):
    """Why a process stopped crawling one list."""

    COMPLETE = "complete"  # the last page is stored (the batch's advance marked it done)
    MISSING = "missing"  # 30003: the account does not exist (held first if many edges: etl.holds)
    REJECTED = "rejected"  # 30001 on a fresh cursor, or a cursor loop: the same would recur
    FAILED = "failed"  # retries ran out: the next sync of the run tries it again
    STOPPED = "stopped"  # a stop request, or another process took the list over
    FATAL = "fatal"  # credentials or app refused: the whole crawl stops
    CRASH = "crash"  # a bug: the whole crawl stops and the error is raised


@dataclass(frozen=True)
class Effect:
    """What an Outcome does to the list's checkpoint and to the crawl."""

    status: str | None  # the checkpoint's new status; None leaves it as it is
    failures: str  # "keep", "add" or "give_up" (see leases.settle)
    records_error: bool  # the error text goes into last_error
    removes_all: bool  # every stored edge of the list is marked removed (unless held: etl.holds)
    settles: bool  # the list needs no more crawling in this run
    stops_crawl: bool  # nothing more is claimed or fetched


EFFECTS: dict[Outcome, Effect] = {
    Outcome.COMPLETE: Effect(None, "keep", False, False, True, False),
    Outcome.MISSING: Effect("skipped", "keep", True, True, True, False),
    Outcome.REJECTED: Effect("failed", "give_up", True, False, True, False),
    Outcome.FAILED: Effect("failed", "add", True, False, False, False),
    Outcome.STOPPED: Effect(None, "keep", False, False, False, False),
    Outcome.FATAL: Effect(None, "keep", True, False, False, True),
    Outcome.CRASH: Effect(None, "keep", False, False, False, True),
}


def outcome_of(exc: BaseException) -> Outcome:
    """The Outcome an exception raised while fetching a list stands for."""
    if isinstance(exc, Stopped):
        return Outcome.STOPPED
    if isinstance(exc, AccountNotFound):
        return Outcome.MISSING
    if isinstance(exc, RequestRejected):
        return Outcome.REJECTED
    if isinstance(exc, TransientApiError):
        return Outcome.FAILED
    if isinstance(exc, FatalApiError):
        return Outcome.FATAL
    return Outcome.CRASH
