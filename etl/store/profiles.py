"""profile_snapshots: a batch's profile versions, staged and inserted when new.

A profile version (user, sequence) already stored is never written again: the first content
stored wins, and a sighting with other content is a conflict (etl.store.quarantine records it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from etl.store.dialect import Dialect
from etl.store.rows import Key
from etl.store.staging import stage_profiles
from etl.tencent.profile import ProfileKey
from etl.tencent.rows import PageRows, Profile, Quarantined, conflict

if TYPE_CHECKING:  # a type only: etl.crawl imports the store
    from etl.crawl.known import KnownProfiles


def write(
    conn: sa.Connection,
    d: Dialect,
    pages: Sequence[tuple[Key, PageRows]],
    params: dict[str, Any],
    known: KnownProfiles | None,
) -> tuple[int, list[tuple[Key, Quarantined]]]:
    """Insert the batch's new profile versions; return how many, and the conflicts: sightings
    of a version with other content than the one stored first (first in batch order, here).
    ``known`` (the fetchers' cache) learns what is stored for each version staged."""
    first: dict[ProfileKey, tuple[Key, Profile]] = {}
    again: list[tuple[Key, Profile]] = []
    for list_key, rows in pages:
        for profile in rows.profiles:
            if first.setdefault(profile.key, (list_key, profile))[1] is not profile:
                again.append((list_key, profile))
    if not first:
        return 0, []
    d.stage(conn, stage_profiles, [d.staged_profile(p.row) for _, p in first.values()])
    stored, inserted = d.insert_profiles(conn, params)
    found: list[tuple[Key, Quarantined]] = []
    for key, (list_key, profile) in first.items():
        if key in stored:
            found.append((list_key, conflict(profile)))
            if known is not None:
                known.settle(key, stored[key])
        elif known is not None:
            known.remember(key, profile.mark)
    for list_key, profile in again:
        if profile.digest != stored.get(profile.key, first[profile.key][1].digest):
            found.append((list_key, conflict(profile)))
    return inserted, found
