"""A page's items -> the rows to store, through the process's KnownProfiles cache.

``page_rows`` reads one well-formed page (etl.tencent.page) item by item. What an item carries
is stored, or stored in the documented form (etl.tencent.profile; README, "Hostile values"),
or quarantined with its reason; ``page_rows`` never raises:

- a To_Account that cannot be a key (empty, NUL, lone surrogate, over 255 UTF-8 bytes): the
  whole item is quarantined;
- a profile_sequence outside 0 .. 2**64-1 or not an integer: the profile is quarantined, the
  edge is kept;
- any other surprise in one item (a bug) is logged at WARNING, and the item quarantined.

Not pure: it consults and updates the shared ``known`` cache (etl.crawl.known), so a version
this process already stored with the same content yields no row.
"""

from __future__ import annotations

import logging

from etl.crawl.known import KnownProfiles, digest_mark
from etl.tencent.page import FollowItem, Page
from etl.tencent.profile import Unstorable, columns, profile_sequence
from etl.tencent.rows import UNSTORABLE, PageRows, Profile, follow_time, quarantine
from etl.tencent.text import key_problem

log = logging.getLogger(__name__)


def page_rows(page: Page, known: KnownProfiles) -> PageRows:
    """Turn one well-formed page into edge and profile rows and quarantined items; never raises.

    ``known`` is shared by every fetcher: a version it holds with the same content yields no
    row; one it holds with other content does, so the writer can tell a conflict against what
    is stored.
    """
    rows = PageRows()
    seen_edges: set[str] = set()
    for index, item in enumerate(page.items):
        try:
            _item_rows(page, index, item, known, rows, seen_edges)
        except Unstorable as exc:
            rows.quarantined.append(quarantine(page.original(index), UNSTORABLE, str(exc)))
        except Exception as exc:  # one item's surprise must not stop the run: a bug, logged
            log.warning("an item could not be read; quarantined", exc_info=True)
            reason = f"item: unreadable ({type(exc).__name__})"
            rows.quarantined.append(quarantine(page.original(index), UNSTORABLE, reason))
    return rows


def _item_rows(
    page: Page,
    index: int,
    item: FollowItem,
    known: KnownProfiles,
    rows: PageRows,
    seen_edges: set[str],
) -> None:
    to_account = item.To_Account
    problem = key_problem(to_account)
    if problem is not None:
        rows.quarantined.append(quarantine(page.original(index), UNSTORABLE, problem))
        return
    # A list that changes between pages can repeat an account; one row per key per page.
    if to_account not in seen_edges:
        seen_edges.add(to_account)
        rows.edges.append((to_account, follow_time(item.FollowTime)))
    # The edge is in: an Unstorable now quarantines the profile.
    sequence = profile_sequence(item.profile_sequence, item.ProfileSequence)
    if sequence is None:
        return
    key = (to_account, sequence)
    known_mark = known.mark(key)
    data = item.profile_bytes()
    if data is not None and known_mark == hash(data):
        return  # the very bytes of a version known stored: the common case, kept cheap
    tags, text, raw, digest, plain = item.snapshot()
    mark = hash(data) if data is not None and (item.wire or plain) else digest_mark(digest)
    if known_mark == digest_mark(digest):
        known.remember(key, mark)  # the same content in other bytes: next time, a lookup
        return
    if known_mark is None:
        known.remember(key, mark)
    # New, or other content than known: the writer tells a conflict from what is stored.
    row = (to_account, sequence, *columns(tags), text, raw, digest)
    rows.profiles.append(Profile(row, page, index, mark))
