"""One callback request, checked and parsed. Pure: the request in, the changes it carries out,
or the Rejection that says why not.

A request is checked in this order, and the first failure decides its answer:

    path             404  not the callback path
    method           405  not a POST
    wrong_app        403  SdkAppid is not the configured app's
    bad_signature    401  with a token: Sign or RequestTime missing, or Sign is not
                          hex sha256(token + RequestTime) (compared in constant time)
    replay           401  RequestTime more than 60 s from now, either side
    unknown_command  400  CallbackCommand (query) is not one of the two follow callbacks, or
                          the body's is another
    oversized        413  the body is over the size cap (Content-Length, or what was read)
    malformed        400  the body is not UTF-8, not JSON (NaN, Infinity refused), or not an
                          object
    wrong_types      400  From_Account not a non-empty string; FollowList not a list of objects
                          with a To_Account string (add), To_Account not a list of strings
                          (delete); an empty To_Account; EventTime not an integer in
                          [0, 2**63)
    unstorable       400  an account id the tables cannot hold: NUL, a lone surrogate, or over
                          255 bytes (etl.tencent.text.key_problem, as the crawl)

Everything before ``oversized`` needs only the request line and headers (``check_head``), so
the app rejects an unauthenticated request without reading its body. A callback with no
To_Account is accepted: it has nothing to apply. The messages quote neither the token nor the
Sign.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from etl.live.settings import ListenSettings
from etl.store.live import Change
from etl.tencent.exact_json import parse_json
from etl.tencent.text import key_problem

ADD = "Follow.CallbackAfterFollowAdd"
DELETE = "Follow.CallbackAfterFollowDelete"
COMMANDS = (ADD, DELETE)
MAX_EVENT_MS = 2**63  # EventTime must be below it (a BIGINT)
MAX_QUERY_FIELDS = 64  # a query with more is no callback's

# reason -> HTTP status (LIVE.md); the reasons are the metric's labels
STATUSES: dict[str, int] = {
    "path": 404,
    "method": 405,
    "wrong_app": 403,
    "bad_signature": 401,
    "replay": 401,
    "unknown_command": 400,
    "oversized": 413,
    "malformed": 400,
    "wrong_types": 400,
    "unstorable": 400,
}
REASONS = tuple(STATUSES)

Headers = Iterable[tuple[bytes, bytes]]  # as ASGI gives them: lower-case names


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request is refused: a reason of STATUSES, its HTTP status, one line."""

    reason: str
    status: int
    message: str


def reject(reason: str, message: str) -> Rejection:
    """The Rejection for ``reason`` (a key of STATUSES)."""
    return Rejection(reason, STATUSES[reason], message)


def parse(
    method: str,
    path: str,
    query: bytes,
    headers: Headers,
    body: bytes,
    now: float,
    settings: ListenSettings,
) -> list[Change] | Rejection:
    """The changes of one request (``now``: Unix seconds), or why it is refused."""
    command = check_head(method, path, query, headers, now, settings)
    if isinstance(command, Rejection):
        return command
    if len(body) > settings.max_body:
        return oversized(settings.max_body)
    return parse_body(command, body)


def check_head(
    method: str, path: str, query: bytes, headers: Headers, now: float, settings: ListenSettings
) -> str | Rejection:
    """The CallbackCommand of a request whose line and headers pass every check before the
    body's, or why it is refused."""
    if path != settings.path:
        return reject("path", f"no route {path[:100]!r}")
    if method != "POST":
        return reject("method", f"{method[:20]} is not allowed: callbacks are POSTed")
    fields = _query(query)
    if fields is None:
        return reject("malformed", f"the query string has over {MAX_QUERY_FIELDS} fields")
    refused = _check_app(fields, settings) or _check_signature(fields, now, settings)
    if refused is not None:
        return refused
    command = _one(fields, "CallbackCommand")
    if command not in COMMANDS:
        return reject("unknown_command", f"CallbackCommand {_shown(command)} is not a follow one")
    declared = declared_length(headers)
    if declared is not None and declared > settings.max_body:
        return oversized(settings.max_body)
    return command


def oversized(max_body: int) -> Rejection:
    """The Rejection of a body over ``max_body`` bytes."""
    return reject("oversized", f"the body is over {max_body} bytes")


def declared_length(headers: Headers) -> int | None:
    """The Content-Length a request declares, if it is a number."""
    for name, value in headers:
        if name == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def _query(query: bytes) -> dict[str, list[str]] | None:
    """The query's fields, each with every value it was given; None for too many fields."""
    try:
        pairs = parse_qsl(
            query.decode("latin-1"),
            keep_blank_values=True,
            max_num_fields=MAX_QUERY_FIELDS,
            errors="replace",
        )
    except ValueError:
        return None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    """The one value of a field; None when it is missing or given more than once (which of
    two values a proxy reads is anybody's guess)."""
    values = fields.get(name, [])
    return values[0] if len(values) == 1 else None


def _shown(value: str | None) -> str:
    """A query value as a message may quote it: missing, or its first characters."""
    return "missing (or repeated)" if value is None else repr(value[:60])


def _check_app(fields: dict[str, list[str]], settings: ListenSettings) -> Rejection | None:
    app = _one(fields, "SdkAppid")
    if app != str(settings.sdkappid):
        return reject("wrong_app", f"SdkAppid {_shown(app)} is not this app's")
    return None


def _check_signature(
    fields: dict[str, list[str]], now: float, settings: ListenSettings
) -> Rejection | None:
    """Sign and RequestTime, when a token is configured; None when they pass."""
    if settings.token is None:
        return None
    stamp, sign = _one(fields, "RequestTime"), _one(fields, "Sign")
    if stamp is None or sign is None:
        return reject("bad_signature", "Sign or RequestTime is missing (or repeated)")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 15):
        return reject("bad_signature", "RequestTime is not a Unix time in seconds")
    expected = sign_for(settings.token.reveal(), stamp).encode()
    if not hmac.compare_digest(expected, sign.lower().encode("utf-8", "replace")):
        return reject("bad_signature", "Sign does not match the token and RequestTime")
    if abs(now - int(stamp)) > settings.replay_seconds:
        away, limit = int(now) - int(stamp), settings.replay_seconds
        return reject("replay", f"RequestTime is {away} s from now, over ±{limit}: a replay")
    return None


def sign_for(token: str, request_time: str) -> str:
    """Tencent's Sign: hex SHA-256 of the token followed by RequestTime."""
    return hashlib.sha256((token + request_time).encode()).hexdigest()


def parse_body(command: str, body: bytes) -> list[Change] | Rejection:
    """The changes of a callback body for ``command``, or why it is refused."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject("malformed", f"the body is not UTF-8 (byte {exc.start})")
    try:
        doc = parse_json(body)
    except Exception:  # noqa: BLE001 - whatever the decoder meets, the body is no callback
        return reject("malformed", "the body is not JSON")
    if not isinstance(doc, dict):
        return reject("malformed", f"the body is JSON but not an object ({type(doc).__name__})")
    given = doc.get("CallbackCommand")
    if not isinstance(given, str):
        return reject("wrong_types", "CallbackCommand (body) is not a string")
    if given != command:
        return reject(
            "unknown_command", f"the body's CallbackCommand {given[:60]!r} is not the query's"
        )
    return _changes(command, doc)


def _changes(command: str, doc: dict[str, Any]) -> list[Change] | Rejection:
    account = doc.get("From_Account")
    refused = _account_problem("From_Account", account)
    if refused is not None:
        return refused
    assert isinstance(account, str)
    event_ms = doc.get("EventTime")
    if type(event_ms) is not int or not 0 <= event_ms < MAX_EVENT_MS:
        return reject("wrong_types", "EventTime is not an integer from 0 to 2**63 - 1")
    targets = _add_targets(doc) if command == ADD else _delete_targets(doc)
    if isinstance(targets, Rejection):
        return targets
    follows = command == ADD
    return [Change(account, to, follows, event_ms) for to in targets]


def _add_targets(doc: dict[str, Any]) -> Sequence[str] | Rejection:
    """FollowList: ``[{"To_Account": "B"}, ...]``."""
    items = doc.get("FollowList")
    if not isinstance(items, list):
        return reject("wrong_types", "FollowList is not a list")
    targets: list[str] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            return reject("wrong_types", f"FollowList[{n}] is not an object")
        refused = _account_problem(f"FollowList[{n}].To_Account", item.get("To_Account"))
        if refused is not None:
            return refused
        targets.append(item["To_Account"])
    return targets


def _delete_targets(doc: dict[str, Any]) -> Sequence[str] | Rejection:
    """To_Account: ``["B", ...]``."""
    items = doc.get("To_Account")
    if not isinstance(items, list):
        return reject("wrong_types", "To_Account is not a list")
    for n, item in enumerate(items):
        refused = _account_problem(f"To_Account[{n}]", item)
        if refused is not None:
            return refused
    return items


def _account_problem(where: str, value: Any) -> Rejection | None:
    """wrong_types for a value that is not a non-empty string, unstorable for one the tables
    cannot hold as a key."""
    if not isinstance(value, str) or not value:
        return reject("wrong_types", f"{where} is not a non-empty string")
    problem = key_problem(value)
    if problem is not None:
        return reject("unstorable", f"{where}: {problem.partition(': ')[2]}")
    return None
