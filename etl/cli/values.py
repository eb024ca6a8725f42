"""The values of the command line's options, parsed: each function takes the raw text and
returns the value, or raises argparse.ArgumentTypeError with the one line argparse prints."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from etl.config import Pushgateway, is_rate, pushgateway
from etl.results import MAX_CONCURRENCY

TYPE_ALIASES = {"fans": 1, "follows": 2, "mutual": 3, "1": 1, "2": 2, "3": 3}


def parse_types(raw: str) -> tuple[int, ...]:
    """``fans,follows,mutual`` (or 1,2,3) -> follow types, in order, without repeats."""
    types: dict[int, None] = {}
    for part in raw.split(","):
        key = part.strip().lower()
        if key not in TYPE_ALIASES:
            raise argparse.ArgumentTypeError(
                f"unknown follow type {part.strip()!r} (use fans, follows, mutual)"
            )
        types.setdefault(TYPE_ALIASES[key])
    return tuple(types)


def page_size(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to 1000, got {raw!r}")
    return int(raw)


def count(least: int) -> Any:
    def parse(raw: str) -> int:
        if not raw.isdigit() or int(raw) < least:
            raise argparse.ArgumentTypeError(f"must be an integer of at least {least}, got {raw!r}")
        return int(raw)

    return parse


def before(raw: str) -> datetime:
    """``--before``: an ISO date (midnight UTC) or date and time (UTC unless it says)."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date like 2026-01-31 (or 2026-01-31T12:00:00+00:00), got {raw!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def positive(kind: type[int] | type[float]) -> Any:
    def parse(raw: str) -> int | float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be positive, got {raw!r}")
        return value

    return parse


def rate(raw: str) -> float:
    """A calls-per-second rate: any positive finite number (0.2 is a call every 5 s)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not is_rate(value):
        raise argparse.ArgumentTypeError(
            f"must be a positive number of calls per second, got {raw!r}"
        )
    return value


def concurrency(raw: str) -> int:
    """``--concurrency``: lists in flight, 1..MAX_CONCURRENCY (a thread each)."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 1 to {MAX_CONCURRENCY} (a thread per list in flight), "
            f"got {raw!r}"
        )
    return value


def fault_kinds(raw: str) -> tuple[str, ...]:
    """``--fault-kinds``: known kinds, in order, without repeats; at least one."""
    from etl.sandbox.faults import FAULT_KINDS

    kinds = tuple(dict.fromkeys(kind.strip() for kind in raw.split(",") if kind.strip()))
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown or not kinds:
        shown = ", ".join(repr(kind) for kind in unknown) or "nothing"
        raise argparse.ArgumentTypeError(f"{shown}: choose from {','.join(FAULT_KINDS)}")
    return kinds


def big_lists(raw: str) -> tuple[int, ...]:
    """``--big-lists``: comma-separated fan counts, each 1..9,999,999."""
    parts = [part.strip().replace("_", "") for part in raw.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and 1 <= int(part) <= 9_999_999 for part in parts):
        raise argparse.ArgumentTypeError(f"expected counts 1..9999999 like 200000,50000: {raw!r}")
    return tuple(int(part) for part in parts)


def share(raw: str) -> float:
    """A number from 0 to 1."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {raw!r}")
    return value


def delay_range(raw: str) -> tuple[float, float]:
    """``--webhook-delay-ms``: ``HI`` (0..HI) or ``LO-HI`` milliseconds, 0 <= LO <= HI."""
    lo, _, hi = raw.strip().rpartition("-") if "-" in raw.strip()[1:] else ("0", "", raw.strip())
    try:
        low, high = float(lo), float(hi)
    except ValueError:
        low = high = -1.0
    if not 0 <= low <= high < float("inf"):
        raise argparse.ArgumentTypeError(f"expected milliseconds like 50 or 10-200, got {raw!r}")
    return low, high


def pushgateway_url(raw: str) -> Pushgateway:
    """--pushgateway, its credentials apart; the error quotes nothing of it (a password)."""
    try:
        return pushgateway(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port(raw: str) -> int:
    """A TCP port, 0..65535 (0: any free port)."""
    if not raw.isdigit() or int(raw) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {raw!r}")
    return int(raw)


def url_path(raw: str) -> str:
    """``--path``: starts with /, no space, ? or #."""
    if not raw.startswith("/") or any(c.isspace() or c in "?#" for c in raw):
        raise argparse.ArgumentTypeError(f"must start with / and hold no space, ? or #: {raw!r}")
    return raw
