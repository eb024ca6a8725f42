"""The profile versions this process knows are stored, shared by fetchers and writers.

Fetchers (etl.crawl.transform.page_rows) skip a version it holds with the same content and
remember new ones; the writers (etl.store.load) settle it with what the database holds.
"""

from __future__ import annotations

from etl.tencent.profile import ProfileKey


class KnownProfiles:
    """Profile versions this process knows are stored, or about to be: key -> a mark of their
    content, ``hash()`` of the ProfileItem's bytes as the answer carried them (so an identical
    answer costs a hash and a lookup; etl.tencent.page) or of the content digest. In-process
    only, like ``hash()``.

    Shared by the fetcher threads and the writers without a lock: each call is one or two dict
    operations, atomic under the GIL. A race between two fetchers builds one version's row
    twice; the writer keeps the first. Bounded: past ``limit`` entries it starts again empty,
    which costs rows staged again, nothing more.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._marks: dict[ProfileKey, int] = {}

    def __len__(self) -> int:
        return len(self._marks)

    def mark(self, key: ProfileKey) -> int | None:
        """The mark known for ``key``, if any."""
        return self._marks.get(key)

    def remember(self, key: ProfileKey, mark: int) -> None:
        """``key`` is stored (or about to be) with the content ``mark`` stands for."""
        marks = self._marks
        if len(marks) >= self.limit and key not in marks:
            marks = self._marks = {}  # fetchers still holding the old dict are harmless
        marks[key] = mark

    def settle(self, key: ProfileKey, digest: str | None) -> None:
        """The database holds ``key`` with the content of ``digest`` (None: not known)."""
        if digest is None:
            self._marks.pop(key, None)
        else:
            self.remember(key, digest_mark(digest))


def digest_mark(digest: str) -> int:
    """The KnownProfiles mark of a content digest."""
    return hash(digest)
