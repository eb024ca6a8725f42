"""The sandbox's injected faults: the kinds there are, which call gets one (``Faults``), and what
a "malformed" answer looks like.

``Faults`` draws random faults (a seeded share of calls), hands out the targeted faults injected
for one list, and holds an outage: an HTTP status (a proxy in front of the service) or a
Tencent error code answered to every API call.

A "malformed" answer is HTTP 200 with ActionStatus OK and ErrorCode 0 that is not a page, in
one of ``MALFORMED_KINDS`` shapes, made from the real answer where it has one (so a missing
NextCursor on a list's last page looks exactly like the end of the list to a careless client).
"""

from __future__ import annotations

import http
import random
import threading

from etl.sandbox.world import FOLLOW_TYPES

# "trickle": the right answer, sent in small pieces over ``slow_ms`` (each piece well inside a
# read timeout, the whole well beyond a request's): a client must bound the whole answer.
FAULT_KINDS = ("30006", "30007", "502", "503", "truncated", "slow", "malformed", "trickle")
DEFAULT_FAULT_KINDS = ("30006", "30007", "502", "503", "truncated", "slow")  # what faults= uses
# Faults aimed at one list (Sandbox.inject, POST /sandbox/inject), each answering one
# follow_get of it: "empty-page" is a well-formed last page with no items (FollowItem [],
# NextCursor "", ActionStatus OK), exactly what a real list that just emptied answers: no
# client can tell it from the truth by its form (named apart from the malformed shape "empty",
# an empty body). "30003" says the account does not exist.
TARGETED_KINDS = ("empty-page", "30003")
MALFORMED_KINDS = (
    "cursor-missing",
    "cursor-null",
    "cursor-number",
    "items-missing",
    "items-null",
    "items-object",
    "item-without-account",
    "account-number",
    "bare",
    "html",
    "empty",
)
_INFO_KINDS = frozenset({"bare", "html", "empty"})  # the shapes that fit follow_get_info too
HTML = "text/html"
JSON = "application/json; charset=utf-8"
OK_TAIL = b',"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ErrorDisplay":""}'


def html(status: int) -> bytes:
    """The HTML page a proxy answers with ``status``."""
    try:
        title = f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        title = f"{status} Error"
    return f"<html><body><h1>{title}</h1></body></html>".encode()


def malformed(kind: str, page: tuple[bytes, str] | None) -> tuple[bytes, str]:
    """(body, content type) of an OK answer in the shape ``kind`` that is not a page.

    ``page`` is the real follow_get answer as (items, comma-separated JSON; NextCursor); None
    for follow_get_info, which then gets a shape that fits it ("bare" for page-only shapes).
    """
    if page is None and kind not in _INFO_KINDS:
        kind = "bare"
    if kind == "html":
        return b"<html><body><h1>Service Unavailable</h1></body></html>", HTML
    if kind == "empty":
        return b"", JSON
    if kind == "bare" or page is None:
        return b'{"ActionStatus":"OK","ErrorCode":0}', JSON
    real_items, real_cursor = page
    items: bytes | None = b"[" + real_items + b"]"
    cursor: bytes | None = b'"' + real_cursor.encode() + b'"'
    if kind == "cursor-missing":
        cursor = None
    elif kind == "cursor-null":
        cursor = b"null"
    elif kind == "cursor-number":
        cursor = b"12345"
    elif kind == "items-missing":
        items = None
    elif kind == "items-null":
        items = b"null"
    elif kind == "items-object":
        items = b'{"items":[' + real_items + b"]}"
    else:  # an item that breaks the contract, ahead of the real ones
        account = b"" if kind == "item-without-account" else b'"To_Account":12345,'
        bad = b"{" + account + b'"FollowTime":1700000000}'
        items = b"[" + bad + (b"," + real_items if real_items else b"") + b"]"
    fields = [b'"FollowItem":' + items] if items is not None else []
    if cursor is not None:
        fields.append(b'"NextCursor":' + cursor)
    return b"{" + b",".join(fields) + OK_TAIL, JSON


class Faults:
    """Which fault, if any, the next API call gets: random, injected for its list, or an outage."""

    def __init__(
        self, share: float, kinds: tuple[str, ...], malformed_kinds: tuple[str, ...], seed: int
    ) -> None:
        self._share = share
        self._kinds = kinds
        self._malformed_kinds = malformed_kinds
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._outage: tuple[str, int] | None = None  # ("status", 503) or ("code", 30006)
        # (account, type) -> targeted faults still to answer, in order (under _lock)
        self._injected: dict[tuple[str, int], list[str]] = {}

    def pick(self) -> tuple[str | None, str]:
        """(fault kind or None, shape of a malformed answer) for the next call."""
        if self._share <= 0.0:
            return None, ""
        with self._lock:
            if self._rng.random() >= self._share:
                return None, ""
            fault = self._rng.choice(self._kinds)
            if fault != "malformed":
                return fault, ""
            return fault, self._rng.choice(self._malformed_kinds)

    def inject(self, account: str, follow_type: int, kind: str, times: int = 1) -> None:
        """Answer the next ``times`` follow_get calls of this list with ``kind`` (one of
        TARGETED_KINDS), whatever their cursor."""
        if kind not in TARGETED_KINDS:
            raise ValueError(f"kind must be one of {TARGETED_KINDS}, got {kind!r}")
        if follow_type not in FOLLOW_TYPES or type(times) is not int or times < 1:
            raise ValueError("type must be 1, 2 or 3 and times a positive integer")
        with self._lock:
            self._injected.setdefault((account, follow_type), []).extend([kind] * times)

    def take_injected(self, account: str, follow_type: int) -> str | None:
        """The next targeted fault injected for this list, used up; None if there is none."""
        if not self._injected:
            return None
        with self._lock:
            waiting = self._injected.get((account, follow_type))
            if not waiting:
                return None
            kind = waiting.pop(0)
            if not waiting:
                del self._injected[(account, follow_type)]
            return kind

    @property
    def outage(self) -> tuple[str, int] | None:
        """The outage in force, ("status", 503) or ("code", 30006); None if none."""
        return self._outage

    def set_outage(self, *, status: int | None = None, code: int | None = None) -> None:
        """Answer every API call with HTTP ``status``, or with Tencent error ``code``; with
        neither, end the outage."""
        if status is not None and code is not None:
            raise ValueError("an outage is an HTTP status or an error code, not both")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status, 100..599")
        if code == 0:
            raise ValueError("code must be a Tencent error code, not 0")
        if status is not None:
            self._outage = ("status", status)
        elif code is not None:
            self._outage = ("code", code)
        else:
            self._outage = None
