"""FollowItem JSON for the sandbox, rendered once per user and joined per page.

Each user's item is kept as a bytes template with one ``%d`` slot for FollowTime (the only part
that depends on the list), so a 1000-item page is one C-level pass: look the templates up, fill
in the times, join. Building the profile of a user (seeded ``random`` draws, ``json.dumps``) costs
tens of microseconds, tens of times what serving a rendered item does, hence the cache and
``warm``. A template is rebuilt when the graph's generation moves and the user's
profile_sequence is no longer the one it was rendered with. The synthetic fans at the end of a
big list (``Graph(big_lists=...)``) share one template with slots for To_Account and FollowTime:
they all have the same minimal profile.

Text is written as UTF-8 where it can be; a value UTF-8 cannot carry (a lone surrogate, from a
hostile graph) makes that value's JSON ASCII, with ``\\ud83d`` escapes, as Tencent's service
would send it. NUL and control characters are always escaped, as JSON requires.
"""

from __future__ import annotations

import json
import threading
from typing import cast

from etl.sandbox.graph import BIG_FAN_PROFILE, Graph, ListView
from etl.sandbox.hostile import BigNumber


def to_json(obj: object) -> bytes:
    """Compact JSON: UTF-8 where it can be, ASCII escapes where it must (lone surrogates)."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    except (UnicodeEncodeError, TypeError):
        return ascii_json(obj)


def ascii_json(obj: object) -> bytes:
    """Compact, ASCII-only JSON of anything the graph holds, BigNumber as a bare number."""
    try:
        return json.dumps(obj, separators=(",", ":")).encode()
    except TypeError:  # a BigNumber somewhere: only the slow path writes it
        return _encode(obj).encode()


def _encode(value: object) -> str:
    if isinstance(value, BigNumber):
        return value.digits
    if isinstance(value, dict):
        pairs = (f"{json.dumps(str(key))}:{_encode(item)}" for key, item in value.items())
        return "{" + ",".join(pairs) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(_encode, value)) + "]"
    return json.dumps(value)


class ItemRenderer:
    """Serialized FollowItem entries of a graph's users, cached per profile_sequence."""

    def __init__(self, graph: Graph, sequence_key: str) -> None:
        self._graph = graph
        # Literal '%' in any text is doubled so the FollowTime slot is the only format field.
        self._seq_key = to_json(sequence_key).replace(b"%", b"%%")
        users = graph.size
        self._templates: list[bytes | None] = [None] * users
        self._rendered_seq = [-1] * users
        self._generation = graph.generation
        self._lock = threading.Lock()
        seq, tags = BIG_FAN_PROFILE
        profile = to_json([{"Tag": tag, "Value": value} for tag, value in tags])
        self._fan_template = b"".join(
            (
                b'{"To_Account":"%b","FollowTime":%d,"ProfileItem":',  # fan ids are plain ASCII
                profile.replace(b"%", b"%%"),
                b",",
                self._seq_key,
                b":%d}" % seq,
            )
        )

    def warm(self) -> None:
        """Render every existing user now, so the first crawl does not pay for it."""
        self._follow_generation()
        templates = self._templates
        for uid in self._graph.accounts:
            index = self._graph.index_of(uid)
            if index is not None and templates[index] is None:
                self._render_user(index, uid)

    def items(self, view: ListView, start: int, end: int) -> bytes:
        """Items ``start:end`` of a list, comma-separated (the inside of the JSON array)."""
        if self._generation != self._graph.generation:
            self._follow_generation()
        cut = len(view.ids) - view.synthetic  # synthetic fans from here on
        if end > cut:
            fans = self._fans(view, max(start, cut), end)
            return fans if start >= cut else self.items(view, start, cut) + b"," + fans
        members = view.members[start:end]
        picked = list(map(self._templates.__getitem__, members))
        if None in picked:
            ids = view.ids
            for offset, index in enumerate(members):
                if picked[offset] is None:
                    picked[offset] = self._render_user(index, ids[start + offset])
        return b",".join(map(bytes.__mod__, cast(list[bytes], picked), view.times[start:end]))

    def _fans(self, view: ListView, start: int, end: int) -> bytes:
        """Items ``start:end`` of a list, all of them synthetic fans."""
        pairs = zip(map(str.encode, view.ids[start:end]), view.times[start:end], strict=True)
        return b",".join(map(self._fan_template.__mod__, pairs))

    def _follow_generation(self) -> None:
        """After a mutate, forget the templates whose profile_sequence has moved."""
        with self._lock:
            generation = self._graph.generation
            if generation == self._generation:
                return
            templates, rendered = self._templates, self._rendered_seq
            for index, seq in enumerate(self._graph.sequences):
                if rendered[index] != seq:
                    templates[index] = None
            self._generation = generation

    def _render_user(self, index: int, uid: str) -> bytes:
        seq, tags = self._graph.profile(uid)
        raw_seq = self._graph.sequences[index]  # what _follow_generation compares
        template = b"".join(
            (
                b'{"To_Account":',
                to_json(uid).replace(b"%", b"%%"),
                b',"FollowTime":%d,"ProfileItem":',
                to_json(tags).replace(b"%", b"%%"),
                b",",
                self._seq_key,
                b":",
                str(seq).encode(),
                b"}",
            )
        )
        self._rendered_seq[index] = raw_seq
        self._templates[index] = template
        return template
