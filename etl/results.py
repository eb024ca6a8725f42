"""The plain values the use cases take and give back: what to sync (SyncRequest), a snapshot
of a sync in flight (Progress), what a sync did (SyncReport), what a verification found and
a repair did (Mismatch, VerifyReport, RepairReport, Verification), and what a migration did
(Migration). They hold data and say what it means (``problem()``, ``outcome``, ``counts()``,
``document()``); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from etl import holds
from etl.errors import EtlError, RunIncomplete, UsageError, VerifyMismatch
from etl.store import db, runs
from etl.store import retention as prune
from etl.tencent.page import TYPE_NAMES

DEFAULT_CONCURRENCY = 16  # lists in flight: enough to hide ~50 ms round trips at 200 calls/s
# Each list in flight is a fetcher thread. 256 keeps the documented quota (200 calls/s) busy
# even at 1 s per round trip (Little's law: 200 in flight), while the threads (a stack each)
# and their queued pages stay small on any host; 100000 would end in "can't start new thread".
MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class SyncRequest:
    """What to crawl and how."""

    job: str
    accounts: Iterable[str]  # read once, as a stream
    types: tuple[int, ...] = (1, 2, 3)
    page_size: int = 1000
    restart: bool = False
    rate: float | None = None  # calls/s for the whole run; None: the client's configured rate
    concurrency: int = DEFAULT_CONCURRENCY
    wait: bool = False  # another sync holds the job: wait for it instead of failing
    db_seconds: float = db.RECONNECT_SECONDS  # how long to wait for a lost database
    # After a clean finish, keep the checkpoints of the job's last N runs
    # (etl.store.retention); 0: all.
    keep_runs: int = prune.DEFAULT_KEEP_RUNS
    # When a crawl's removals are a mass removal, held until a second crawl confirms them.
    holds: holds.Thresholds = field(default_factory=holds.Thresholds)
    list_chunk: int = runs.ADD_CHUNK  # lists added (and sized) per committed transaction

    def __post_init__(self) -> None:
        check_concurrency(self.concurrency)


def check_concurrency(concurrency: int) -> None:
    """UsageError unless ``concurrency`` is 1..MAX_CONCURRENCY."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")


@dataclass(frozen=True)
class Progress:
    """A snapshot of a sync in flight, handed to ``on_progress`` about twice a second."""

    run_id: int
    job: str
    lists_total: int  # lists of the run
    lists_settled: int  # done, skipped or given up: no longer to crawl
    pages: int  # stored by this process so far
    items: int  # stored by this process so far
    calls: int  # follow_get calls made by this process so far
    retries: int
    elapsed: float  # seconds since this process started on the run
    calls_per_second: float  # over the last few seconds
    eta_seconds: float | None  # None until there is a rate to extrapolate from
    workers: int  # live processes on the run, this one included
    final: bool = False  # the last snapshot, sent once when the process stops
    edges_added: int = 0  # edge events "added" recorded by this process
    edges_removed: int = 0
    quarantined: int = 0
    conflicts: int = 0
    malformed: int = 0
    profiles: int = 0  # profile versions stored for the first time by this process
    answers: dict[str, int] = field(default_factory=dict)  # by code (FollowClient.answers)


@dataclass
class SyncReport:
    """What a sync did, for the CLI to print."""

    run_id: int
    job: str
    resumed: bool
    lists: dict[str, int] = field(default_factory=dict)
    pages: int = 0  # stored by this process
    items: int = 0  # stored by this process
    requests: int = 0
    retries: int = 0
    edges_removed: int = 0
    # Lists of accounts that do not exist (30003), and lists given up or failed, in this
    # process: how many, and the first few (the checkpoints keep them all: `status`).
    missing_lists: int = 0
    missing_accounts: list[str] = field(default_factory=list)  # the first few
    failure_count: int = 0
    failures: list[str] = field(default_factory=list)  # the first few
    listed: bool = True  # every list of the run is in (a stop may come before)
    seconds: float = 0.0
    events: int = 0
    malformed: int = 0  # answers that were "OK" but not a page (retried)
    quarantined: int = 0  # items that could not be stored, kept aside (see `status`)
    conflicts: int = 0  # profile versions seen again with other content (the first is kept)
    profiles: int = 0  # profile versions stored for the first time
    interrupted: bool = False  # stopped on request (signal): the run is left resumable
    # Another process closed the run under this one: "abandoned" (`sync --restart`) or "done".
    closed_by_other: str | None = None
    worker: bool = False  # a `worker` joining the run, not the job's `sync`

    def problem(self) -> RunIncomplete | None:
        """Why this sync does not count as a clean finish (exit 6), or None. A stop on request
        is not a problem here: the signal's own exit code says it (etl.cli). A worker
        whose run another process abandoned has done nothing wrong: no problem either."""
        lists, where = self.lists, f"run {self.run_id} of job {self.job!r}"
        if self.interrupted:
            return None
        if self.closed_by_other == "abandoned":
            if self.worker:
                return None
            return RunIncomplete(
                f"{where} was abandoned by another `sync --restart` while this process crawled "
                "it; the new run goes on without it"
            )
        if not self.listed:
            return RunIncomplete(
                f"{where} stopped before all its lists were added; "
                "run `sync` again to add the rest and resume it"
            )
        if not self.finished:
            return RunIncomplete(
                f"{where} stopped with {lists['open']} of {lists['total']} lists left; "
                "run `sync` again to resume it"
            )
        if lists["failed"]:
            return RunIncomplete(
                f"{where} ended with {lists['failed']} of {lists['total']} lists given up "
                f"(see `status --job {self.job}`); the next `sync` starts a new run"
            )
        if lists.get("held"):
            return RunIncomplete(
                f"{where} ended with {lists['held']} lists held for a mass removal, not "
                f"confirmed: nothing of theirs removed (see `status --job {self.job}`); the "
                "next `sync` crawls them again"
            )
        return None

    @property
    def finished(self) -> bool:
        """True when every list is in and none is left to crawl (done, skipped, given up, or
        held and not confirmed)."""
        return self.listed and self.lists.get("open", 1) == 0

    @property
    def outcome(self) -> str:
        """ "finished", "interrupted" (stopped on request), "abandoned" (another process
        abandoned the run under this one), or "incomplete" (lists left, or given up: see
        ``problem()``)."""
        if self.interrupted:
            return "interrupted"
        if self.closed_by_other == "abandoned":
            return "abandoned"
        return "finished" if self.problem() is None else "incomplete"

    def counts(self) -> dict[str, int | float | str]:
        """The figures as one flat mapping of plain values (for an orchestrator's metadata,
        XCom, or a log record)."""
        lists = {f"lists_{status}": n for status, n in sorted(self.lists.items())}
        return {
            "run_id": self.run_id,
            "job": self.job,
            "outcome": self.outcome,
            "resumed": int(self.resumed),
            **lists,
            "pages": self.pages,
            "items": self.items,
            "requests": self.requests,
            "retries": self.retries,
            "edges_added": self.events - self.edges_removed,
            "edges_removed": self.edges_removed,
            "profile_versions": self.profiles,
            "malformed_answers": self.malformed,
            "quarantined": self.quarantined,
            "profile_conflicts": self.conflicts,
            "missing_lists": self.missing_lists,
            "failures": self.failure_count,
            "seconds": round(self.seconds, 3),
        }


# ---- verify ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One list whose stored size differs from the API's count."""

    account: str
    follow_type: int
    stored: int
    api: int
    missing: bool = False  # the API says the account does not exist (so its count is 0)

    def describe(self) -> str:
        """``user_1 fans: stored 12, API 13``."""
        gone = " (the account does not exist)" if self.missing else ""
        kind = TYPE_NAMES.get(self.follow_type, str(self.follow_type))
        return f"{self.account} {kind}: stored {self.stored}, API {self.api}{gone}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class VerifyReport:
    """What a verification compared and found: counts, and the first few of each kind (every
    disagreeing list is in verify_mismatches, under ``run_id`` and ``verified_at``)."""

    job: str
    run_id: int
    run_status: str
    accounts: int = 0  # accounts the API gave counts for (or said do not exist)
    lists: int = 0  # (account, follow type) lists compared
    lists_not_checked: int = 0  # lists of the run not crawled to their end in it
    mismatches: list[Mismatch] = field(default_factory=list)  # the first few
    missing_accounts: list[str] = field(default_factory=list)  # the first few
    unchecked: list[tuple[str, str]] = field(default_factory=list)  # the first few
    disagree: int = 0  # lists that disagree
    disagreeing_accounts: int = 0  # accounts with a list that disagrees
    missing: int = 0  # accounts the API says do not exist
    without_counts: int = 0  # accounts follow_get_info gave no counts for
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    verified_at: datetime = field(default_factory=_utcnow)  # the key of its stored mismatches

    def problem(self) -> EtlError | None:
        """Why this verification is not clean (exit 9, or 6 without counts), or None."""
        if self.disagree:
            return VerifyMismatch(
                f"{self.disagree} lists of {self.disagreeing_accounts} accounts disagree "
                "with the API's counts"
            )
        if self.without_counts:
            return RunIncomplete(
                f"follow_get_info gave no counts for {self.without_counts} accounts; "
                "run `verify` again"
            )
        return None

    def document(self) -> dict[str, Any]:
        """The JSON-ready form (``verify --json``)."""
        return {
            "job": self.job,
            "run_id": self.run_id,
            "run_status": self.run_status,
            "accounts": self.accounts,
            "lists": self.lists,
            "agree": self.lists - self.disagree,
            "disagree": self.disagree,
            "missing": self.missing,
            "without_counts": self.without_counts,
            "lists_not_checked": self.lists_not_checked,
            "mismatches": [
                {
                    "account": m.account,
                    "follow_type": m.follow_type,
                    "stored": m.stored,
                    "api": m.api,
                    "missing": m.missing,
                }
                for m in self.mismatches
            ],
            "missing_accounts": self.missing_accounts,
            "unchecked": [{"account": a, "error": why} for a, why in self.unchecked],
            "requests": self.requests,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class RepairReport:
    """The re-crawls of a repair and the verification of the repaired lists after them."""

    job: str
    syncs: list[SyncReport]
    after: VerifyReport


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found, and what ``--repair`` did about it (None: no repair)."""

    report: VerifyReport
    repaired: RepairReport | None = None

    @property
    def final(self) -> VerifyReport:
        """The last word: the re-check after a repair, else the verification itself."""
        return self.repaired.after if self.repaired else self.report

    def problem(self) -> EtlError | None:
        """VerifyMismatch while lists still disagree, RunIncomplete for accounts without
        counts, or None."""
        return self.final.problem()

    def document(self) -> dict[str, Any]:
        """``verify --json``: the verification, and the repair runs and re-check if any."""
        doc: dict[str, Any] = {"verify": self.report.document(), "repair": None}
        if self.repaired:
            doc["repair"] = {
                "job": self.repaired.job,
                "runs": [
                    {
                        "run_id": run.run_id,
                        "lists": run.lists,
                        "requests": run.requests,
                        "edges_removed": run.edges_removed,
                        "finished": run.finished,
                    }
                    for run in self.repaired.syncs
                ],
                "after": self.repaired.after.document(),
            }
        return doc


@dataclass(frozen=True)
class Migration:
    """What ``migrate`` did."""

    before: str | None  # the revision the database was at (None: empty)
    after: str
    created_schema: bool  # FOLLOW_ETL_SCHEMA did not exist and was created

    @property
    def changed(self) -> bool:
        """True when the schema was upgraded."""
        return self.before != self.after
