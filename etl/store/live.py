"""Callback changes applied to the graph (`follow-etl listen`, etl.live): the edges of the
lists the store keeps, their events (source 'callback'), and the ordering state in live_pairs.

Functions take a connection and never commit: the listener's batch transaction holds them, and
acknowledges the callbacks only after it committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa


@dataclass(frozen=True, slots=True)
class Change:
    """One direction of one callback: ``account`` followed (or unfollowed) ``to_account``."""

    account: str  # From_Account
    to_account: str  # one To_Account of the callback
    follows: bool  # True: Follow.CallbackAfterFollowAdd; False: Follow.CallbackAfterFollowDelete
    event_ms: int  # EventTime, Unix milliseconds, 0 <= event_ms < 2**63


@dataclass
class Applied:
    """What a batch of changes did."""

    changes: int = 0  # changes given
    applied: int = 0  # newer than any applied before for their direction: they decided it
    stale: int = 0  # duplicates, and changes older than the newest applied for the direction
    untracked: int = 0  # list updates skipped: no baseline (the list is not kept)
    added: int = 0  # edges made current
    removed: int = 0  # edges ended


def apply(conn: sa.Connection, changes: Sequence[Change]) -> Applied:
    """Apply ``changes`` (any order, duplicates allowed) in the caller's transaction."""
    raise NotImplementedError
