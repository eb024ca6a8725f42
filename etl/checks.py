"""The checks etl.api makes of a call's arguments before anything is stored or fetched: the
options of a sync (UsageError for what the CLI's parser refuses too), its accounts, the
report's path."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from etl import holds
from etl.accounts import Accounts
from etl.config import Settings, is_rate
from etl.errors import UsageError
from etl.results import SyncRequest, check_concurrency
from etl.store import db


def report_path(raw: str | Path) -> Path:
    """Where the report goes, checked before the queries run: an existing, writable folder."""
    out = Path(raw)
    folder = out.parent
    if out.is_dir():
        raise UsageError(f"--out {raw}: is a directory; name the HTML file to write")
    if not folder.is_dir():
        raise UsageError(f"--out {raw}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {raw}: not writable")
    return out


def sync_request(
    settings: Settings,
    *,
    job: str,
    types: tuple[int, ...],
    page_size: int,
    restart: bool,
    rate: float | None,
    concurrency: int,
    wait: bool,
    keep_runs: int,
    hold_min_edges: int | None,
    hold_share: float | None,
) -> SyncRequest:
    """A sync's request, every option checked (UsageError; ConfigError for an API setting
    missing), its accounts still to come."""
    _check_options(page_size=page_size, rate=rate, concurrency=concurrency, types=types)
    if keep_runs < 0:
        raise UsageError(f"keep_runs must be 0 (keep all) or more, got {keep_runs}")
    min_edges = settings.holds.min_edges if hold_min_edges is None else hold_min_edges
    share = settings.holds.share if hold_share is None else hold_share
    if problem := holds.invalid(min_edges, share):
        raise UsageError(problem)
    return SyncRequest(
        job=job,
        accounts=(),
        types=types,
        page_size=page_size,
        restart=restart,
        rate=rate or settings.api().rate,
        concurrency=concurrency,
        wait=wait,
        db_seconds=settings.db_retry_seconds,
        keep_runs=keep_runs,
        holds=holds.Thresholds(min_edges, float(share)),
    )


def requested_accounts(
    settings: Settings,
    accounts: Iterable[str],
    accounts_file: str | Path | None,
    accounts_query: str | None,
    stop: threading.Event | None = None,
) -> Accounts:
    """The requested accounts, every one checked now (UsageError; Stopped once ``stop`` is
    set), read again later."""
    if isinstance(accounts, str):
        raise UsageError("accounts must be a list of UserIDs, not one string")
    query = None
    if accounts_query is not None:
        url = settings.accounts_database_url or settings.database_url
        query = (db.make_engine(url), accounts_query)
    source = None if accounts_file is None else str(accounts_file)
    try:
        listed = Accounts(source, list(accounts), query=query, extra_label="accounts", stop=stop)
    finally:
        if query is not None:
            query[0].dispose()
    if not listed.count:
        listed.close()
        raise UsageError(
            "no accounts to sync: give accounts, an accounts file or an accounts query"
        )
    return listed


def _check_options(
    *, page_size: int, rate: float | None, concurrency: int, types: Iterable[int]
) -> None:
    """The CLI's argument checks, for callers that skip the CLI (UsageError)."""
    if not 1 <= page_size <= 1000:
        raise UsageError(f"page_size must be 1..1000, got {page_size}")
    if rate is not None and not is_rate(rate):
        raise UsageError(f"rate must be a positive number of calls per second, got {rate}")
    check_concurrency(concurrency)
    chosen = tuple(types)
    if not chosen or any(t not in (1, 2, 3) for t in chosen) or len(set(chosen)) != len(chosen):
        raise UsageError(f"types must be distinct follow types among 1, 2, 3, got {chosen}")
