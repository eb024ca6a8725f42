"""Check stored lists against the API's own counts (``v4/follow/follow_get_info``); repair them.

``verify`` takes the lists the job's latest run crawled to their end (``done``, or ``skipped``
because the account did not exist) and compares, account by account, the number of current
edges stored (``removed_at IS NULL``) with the count the API gives now: fans with
FollowerCount, follows with FollowingCount, mutual with MutualFollowingCount. Accounts stream
from the database a chunk at a time and go to the API 20 per call (the reference's maximum).

The API counts the live graph while the store holds the last crawl, so a correct store of an
unchanged graph agrees exactly and a list that changed since the crawl disagrees too.
``repair`` re-crawls exactly the disagreeing lists through ``etl.sync``, under the job
``<job>:repair`` so that the job's own runs are untouched, then compares those lists again.
A sync of the job may crawl the same lists meanwhile: neither crawl undoes what the other saw
after it began (etl.store.edges: each crawl changes only edges unchanged since its start),
so the two record no false event.

Memory is flat in accounts: the report counts what disagrees (and what is missing or has no
counts) and keeps the first SHOWN of each; every disagreeing list goes to the table
verify_mismatches (by the run verified and the verification's time), a chunk of accounts per
transaction, and ``repair`` streams them back from there. A stop request is heard between
follow_get_info calls (Stopped); what was stored stays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import groupby

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.accounts import batched
from etl.errors import Stopped
from etl.results import Mismatch, RepairReport, SyncRequest, VerifyReport
from etl.store import mismatches, runs
from etl.store.schema import follow_edges, sync_checkpoints
from etl.sync import sync
from etl.tencent.client import FollowClient
from etl.tencent.info import INFO_BATCH, Answer, ask
from etl.tencent.page import TYPE_NAMES

log = logging.getLogger(__name__)

CHUNK = 500  # accounts per database query: memory stays flat, bound parameters stay few
PROGRESS_EVERY = 5.0  # seconds between progress log lines
CHECKED = ("done", "skipped")  # lists a run crawled to their end: their store can be checked
SHOWN = 20  # disagreeing lists, missing accounts, accounts without counts kept in a report

ck = sync_checkpoints.c
Lists = Iterable[tuple[str, tuple[int, ...]]]  # (account, follow types to compare)


def repair_job(job: str) -> str:
    """The job name repair runs belong to, so they never resume or replace the job's own run."""
    return f"{job}:repair"


def verify(
    engine: Engine, client: FollowClient, job: str, *, stop: threading.Event | None = None
) -> VerifyReport | None:
    """Compare the lists of the job's latest run with follow_get_info; None if it has no runs.
    Stopped once ``stop`` is set (between calls)."""
    with engine.connect() as conn:
        run = runs.latest_run(conn, job)
        if run is None:
            return None
        not_checked = conn.execute(
            sa.select(sa.func.count()).where(ck.run_id == run.id, ck.status.not_in(CHECKED))
        ).scalar_one()
    report = VerifyReport(
        job=job, run_id=run.id, run_status=run.status, lists_not_checked=int(not_checked)
    )
    # The run's earlier verifications are superseded: their stored mismatches go.
    _forget(engine, run.id, report.verified_at)
    _compare_all(engine, client, _run_lists(engine, run.id), report, stop)
    return report


def verify_lists(
    engine: Engine,
    client: FollowClient,
    report: VerifyReport,
    lists: Lists,
    *,
    stop: threading.Event | None = None,
) -> VerifyReport:
    """Compare just ``lists`` again, reported as a new VerifyReport of the same run."""
    again = VerifyReport(job=report.job, run_id=report.run_id, run_status=report.run_status)
    _compare_all(engine, client, lists, again, stop)
    return again


def disagreeing(engine: Engine, report: VerifyReport) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(account, the follow types that disagree), in account order, read back from
    verify_mismatches a chunk per short query."""
    after: tuple[str, int] = ("", 0)
    account: str | None = None
    types: tuple[int, ...] = ()
    while True:
        with engine.connect() as conn:
            rows = mismatches.after(conn, report.run_id, report.verified_at, after, CHUNK * 3)
        for row_account, follow_type in rows:
            if row_account != account:
                if account is not None:
                    yield account, types
                account, types = row_account, ()
            types = (*types, follow_type)
        if not rows:
            if account is not None:
                yield account, types
            return
        after = rows[-1]


def repair(
    engine: Engine,
    client: FollowClient,
    report: VerifyReport,
    *,
    page_size: int = 1000,
    stop: threading.Event | None = None,
) -> RepairReport:
    """Re-crawl the disagreeing lists (job ``<job>:repair``), then compare them again.

    One sync per set of disagreeing follow types, so an account is re-crawled for those types
    only; each streams its accounts from verify_mismatches. ``restart`` abandons a repair run
    an earlier repair left unfinished: a repair crawls what disagrees now, not what disagreed
    then. Stopped if ``stop`` is set (a sync stopped on the way is resumable, as always).
    """
    groups = sorted({types for _, types in disagreeing(engine, report)})  # at most 7
    job = repair_job(report.job)
    syncs = []
    for types in groups:
        if stop is not None and stop.is_set():
            raise Stopped("stopped between repair runs")
        log.info("repair: re-crawling %s of the accounts that disagree", _names(types))
        accounts = (a for a, disagree in disagreeing(engine, report) if disagree == types)
        request = SyncRequest(
            job=job, accounts=accounts, types=types, page_size=page_size, restart=True
        )
        done = sync(engine, client, request, stop=stop)
        syncs.append(done)
        if stop is not None:
            client.interrupt_on(stop)  # the sync gave the client's waits back to their own
        if done.interrupted:
            raise Stopped("stopped during a repair run")
    after = verify_lists(engine, client, report, disagreeing(engine, report), stop=stop)
    return RepairReport(job=job, syncs=syncs, after=after)


# ---- the comparison ----------------------------------------------------------------------


def _compare_all(
    engine: Engine,
    client: FollowClient,
    lists: Lists,
    report: VerifyReport,
    stop: threading.Event | None = None,
) -> None:
    """Compare ``lists`` a chunk of accounts at a time; fill in ``report``, store each chunk's
    mismatches (one transaction). Stopped once ``stop`` is set."""
    started = last_log = time.monotonic()
    calls, retries = client.calls, client.retries
    try:
        for chunk in batched(lists, CHUNK):
            stored = _stored_counts(engine, [account for account, _ in chunk])
            found: list[Mismatch] = []
            for batch in batched(chunk, INFO_BATCH):
                if stop is not None and stop.is_set():
                    raise Stopped("verify: stop requested")
                answers = ask(client, [account for account, _ in batch])
                for account, types in batch:
                    got = stored.get(account, {})
                    found += _compare(report, account, types, got, answers[account])
            _store(engine, report, found)
            if time.monotonic() - last_log >= PROGRESS_EVERY:
                last_log = time.monotonic()
                log.info(
                    "verify: %d accounts checked, %d lists disagree so far",
                    report.accounts,
                    report.disagree,
                )
    finally:
        report.requests += client.calls - calls
        report.retries += client.retries - retries
        report.seconds += time.monotonic() - started


def _compare(
    report: VerifyReport,
    account: str,
    types: tuple[int, ...],
    stored: dict[int, int],
    answer: Answer,
) -> list[Mismatch]:
    """Count one account's lists in ``report``; return those that disagree."""
    if answer.error is not None:
        report.without_counts += 1
        if len(report.unchecked) < SHOWN:
            report.unchecked.append((account, answer.error))
        return []
    report.accounts += 1
    if answer.missing:
        report.missing += 1
        if len(report.missing_accounts) < SHOWN:
            report.missing_accounts.append(account)
    found = []
    for follow_type in types:
        report.lists += 1
        have, want = stored.get(follow_type, 0), answer.counts.get(follow_type, 0)
        if have != want:
            found.append(Mismatch(account, follow_type, have, want, answer.missing))
    if found:
        report.disagree += len(found)
        report.disagreeing_accounts += 1
        report.mismatches += found[: SHOWN - len(report.mismatches)]
    return found


def _store(engine: Engine, report: VerifyReport, found: list[Mismatch]) -> None:
    """Keep a chunk's mismatches in verify_mismatches (one transaction)."""
    if found:
        with engine.begin() as conn:
            mismatches.add(conn, report.run_id, report.verified_at, found)


def _forget(engine: Engine, run_id: int, before: datetime) -> None:
    """Delete the stored mismatches of the run's verifications before ``before``, a chunk per
    transaction."""
    while True:
        with engine.begin() as conn:
            n = mismatches.forget(conn, run_id, before, CHUNK * 10)
        if n < CHUNK * 10:
            return


def _run_lists(engine: Engine, run_id: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(account, types) of the run's lists crawled to their end, in account order."""
    rows = _checked_rows(engine, run_id)
    for account, group in groupby(rows, key=lambda row: row[0]):
        yield account, tuple(follow_type for _, follow_type in group)


def _checked_rows(engine: Engine, run_id: int) -> Iterator[tuple[str, int]]:
    """The run's checkable (account, follow type) pairs, a chunk per short query."""
    after: tuple[str, int] = ("", 0)
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(ck.account, ck.follow_type)
                .where(
                    ck.run_id == run_id,
                    ck.status.in_(CHECKED),
                    sa.tuple_(ck.account, ck.follow_type) > sa.tuple_(*after),
                )
                .order_by(ck.account, ck.follow_type)
                .limit(CHUNK * 3)
            ).all()
        if not rows:
            return
        for account, follow_type in rows:
            yield account, int(follow_type)
        after = (rows[-1].account, rows[-1].follow_type)


def _stored_counts(engine: Engine, accounts: list[str]) -> dict[str, dict[int, int]]:
    """Current edges per account and follow type (absent: none)."""
    e = follow_edges.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.account, e.follow_type, sa.func.count())
            .where(e.account.in_(accounts), e.removed_at.is_(None))
            .group_by(e.account, e.follow_type)
        ).all()
    result: dict[str, dict[int, int]] = {}
    for account, follow_type, count in rows:
        result.setdefault(account, {})[int(follow_type)] = int(count)
    return result


def _names(types: tuple[int, ...]) -> str:
    return ",".join(TYPE_NAMES.get(t, str(t)) for t in types)
