"""The sandbox's injected faults: the kinds there are, and what a "malformed" answer looks like.

A "malformed" answer is HTTP 200 with ActionStatus OK and ErrorCode 0 that is not a page, in
one of ``MALFORMED_KINDS`` shapes, made from the real answer where it has one (so a missing
NextCursor on a list's last page looks exactly like the end of the list to a careless client).
"""

from __future__ import annotations

import http

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
