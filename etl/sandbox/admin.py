"""The sandbox's own admin routes (not Tencent's, no auth): stats, accounts, truth, mutate,
follow and unfollow, the webhook's record.

Tests, the demo and benchmarks use them to drive a sandbox running in another process:

- ``GET /sandbox/accounts[?top=N&by=fans|follows|mutual]``: every account, or the N with the
  longest lists of that type (ties by id), with their list sizes in ``counts``.
- ``GET /sandbox/truth?account=A&type=T``: one list with follow times and profiles.
- ``POST /sandbox/truth-digest`` ``{"accounts": [...], "types": [1, 2, 3]}``: per list, its size
  and a digest of its (To_Account, FollowTime) pairs, so a benchmark can check a crawl of
  thousands of lists against the truth without moving them (see ``list_digest``).
- ``GET /sandbox/stats`` (``GET /sandbox/counts``: the cheap counters only, for polling
  during a crawl of millions of lists), ``POST /sandbox/reset-stats``, ``POST /sandbox/mutate``.
- ``POST /sandbox/outage`` ``{"status": 503}``: from now on answer every API call (follow_get
  and follow_get_info) with that HTTP status and an HTML body, before any check, the way a
  proxy in front of a failing service does; any status 100..599. ``{"code": 30006}``: answer
  every API call that passes the auth and rate checks with that Tencent error code (HTTP 200,
  ActionStatus FAIL). ``{"status": null}`` (or ``{}``) ends the outage. The answer, like
  ``GET /sandbox/outage``, is the outage in force: ``{"outage": {"status": 503}}`` or
  ``{"outage": null}``. Calls answered this way count as fault "outage" in the stats.
- ``POST /sandbox/inject`` ``{"account": "A", "type": 1, "kind": "empty-page", "times": 1}``:
  the next ``times`` follow_get calls of that list get that targeted fault (a well-formed
  empty last page, or "30003"; see etl.sandbox.faults.TARGETED_KINDS).

- ``POST /sandbox/follow`` ``{"from": "A", "to": ["B", ...]}``: A follows each B now (a B it
  follows already, or A itself, is left alone); ``POST /sandbox/unfollow``, the same body: A
  unfollows each B. follow_get serves the change at once, and a sandbox with a webhook posts
  it (etl.sandbox.changes). The answer: ``{"changed": [...], "unchanged": [...]}``; 404 when
  an account does not exist (nothing changed then).
- ``GET /sandbox/webhook[?events=1][&wait=S]``: what became of the callbacks the sandbox
  posted (etl.sandbox.webhook ``report``: counts, the changes it dropped and those that failed;
  ``events=1``: each callback's record), once those in flight are answered or ``S`` seconds
  (at most 30) have passed; ``{"url": null}`` when the sandbox posts none.

Answers are ASCII JSON: the graph's values (a hostile graph's NUL, lone surrogates, integers
past 64 bits, a 5000-digit integer as a bare number) come back exactly as the API serves them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Protocol

from etl.sandbox.graph import FOLLOW_TYPES, Graph


class Controls(Protocol):
    """What the admin routes drive: the sandbox's graph, counters, outage and injected faults."""

    graph: Graph

    @property
    def outage(self) -> dict[str, int] | None:
        """The outage in force, as ``{"status": 503}`` or ``{"code": 30006}``; None if none."""

    def stats(self) -> dict[str, object]:
        """A snapshot of the counters."""

    def counts(self) -> dict[str, object]:
        """The cheap counters."""

    def reset_stats(self) -> None:
        """Zero every counter."""

    def set_outage(self, *, status: int | None = None, code: int | None = None) -> None:
        """Start (or, with neither, end) an outage."""

    def inject(self, account: str, follow_type: int, kind: str, times: int = 1) -> None:
        """Answer the next ``times`` follow_get calls of a list with a targeted fault."""

    def follow(self, account: str, targets: list[str], *, follows: bool) -> dict[str, object]:
        """``account`` follows (or unfollows) each of ``targets``; KeyError: no such account."""

    def webhook_report(self, *, events: bool = False, wait: float = 0.0) -> dict[str, object]:
        """What became of the callbacks posted."""


_PATHS = frozenset(
    f"/sandbox/{name}"
    for name in (
        "stats",
        "counts",
        "accounts",
        "reset-stats",
        "mutate",
        "truth",
        "truth-digest",
        "outage",
        "inject",
        "follow",
        "unfollow",
        "webhook",
    )
)
_FOLLOW_LIMIT = 10_000  # accounts one follow or unfollow request names, at most
_WAIT_LIMIT = 30.0  # seconds GET /sandbox/webhook waits for the callbacks in flight, at most
_BY = {"fans": 0, "follows": 1, "mutual": 2}
_DIGEST_LIMIT = 100_000  # accounts per truth-digest request


def list_digest(items: Iterable[tuple[str, int]]) -> str:
    """Digest of one list: SHA-256 of ``"{to_account} {follow_time}\n"`` lines in ascending
    To_Account order, first 16 hex digits, the text as UTF-8 (lone surrogates of hostile ids
    with ``surrogatepass``). Anyone holding the rows can compute it."""
    digest = hashlib.sha256()
    for to_account, follow_time in sorted(items):
        digest.update(f"{to_account} {follow_time}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def answer(
    sandbox: Controls, method: str, path: str, query: Mapping[str, str], body: bytes
) -> tuple[int, object]:
    """(HTTP status, JSON-ready answer) for one admin request."""
    route = (method, path)
    if route == ("GET", "/sandbox/stats"):
        return 200, sandbox.stats()
    if route == ("GET", "/sandbox/counts"):
        return 200, sandbox.counts()
    if route == ("GET", "/sandbox/accounts"):
        return _accounts(sandbox, query)
    if route == ("POST", "/sandbox/reset-stats"):
        sandbox.reset_stats()
        return 200, {"ok": True}
    if route == ("POST", "/sandbox/mutate"):
        return _mutate(sandbox, body)
    if route == ("GET", "/sandbox/truth"):
        return _truth(sandbox, query)
    if route == ("POST", "/sandbox/truth-digest"):
        return _truth_digest(sandbox, body)
    if route == ("POST", "/sandbox/outage"):
        return _outage(sandbox, body)
    if route == ("POST", "/sandbox/inject"):
        return _inject(sandbox, body)
    if route == ("GET", "/sandbox/outage"):
        return 200, {"outage": sandbox.outage}
    if route in (("POST", "/sandbox/follow"), ("POST", "/sandbox/unfollow")):
        return _follow(sandbox, body, follows=path == "/sandbox/follow")
    if route == ("GET", "/sandbox/webhook"):
        return _webhook(sandbox, query)
    if path in _PATHS:
        return 405, {"error": f"{method} not allowed on {path}"}
    return 404, {"error": "not found", "path": path}


def _mutate(sandbox: Controls, body: bytes) -> tuple[int, object]:
    try:
        spec = json.loads(body or b"{}")
        if not isinstance(spec, dict) or type(spec.get("seed")) is not int:
            raise TypeError("expected a JSON object with an integer seed")
        summary = sandbox.graph.mutate(
            spec["seed"],
            unfollow=float(spec.get("unfollow", 0.03)),
            follow=float(spec.get("follow", 0.03)),
            profile=float(spec.get("profile", 0.05)),
            delete=int(spec.get("delete", 0)),
        )
    except (ValueError, TypeError) as exc:
        return 400, {"error": f"bad mutate request: {exc}"}
    return 200, summary


def _follow(sandbox: Controls, body: bytes, *, follows: bool) -> tuple[int, object]:
    try:
        spec = json.loads(body or b"{}")
        if not isinstance(spec, dict) or set(spec) != {"from", "to"}:
            raise TypeError('expected {"from": "A", "to": ["B", ...]}')
        account, targets = spec["from"], spec["to"]
        if not isinstance(account, str) or not isinstance(targets, list):
            raise TypeError('"from" is an account, "to" a list of accounts')
        if not all(isinstance(a, str) for a in targets) or len(targets) > _FOLLOW_LIMIT:
            raise TypeError(f'"to" is a list of at most {_FOLLOW_LIMIT} accounts')
    except (ValueError, TypeError) as exc:
        return 400, {"error": f"bad follow request: {exc}"}
    try:
        return 200, sandbox.follow(account, targets, follows=follows)
    except KeyError as exc:
        return 404, {"error": f"account {exc.args[0]!r} does not exist"}


def _webhook(sandbox: Controls, query: Mapping[str, str]) -> tuple[int, object]:
    wait = query.get("wait", "0")
    try:
        seconds = float(wait)
        if not 0 <= seconds <= _WAIT_LIMIT:  # NaN too
            raise ValueError
    except ValueError:
        return 400, {"error": f"wait is a number of seconds, 0..{_WAIT_LIMIT:g}"}
    events = query.get("events", "") in ("1", "true")
    return 200, sandbox.webhook_report(events=events, wait=seconds)


def _outage(sandbox: Controls, body: bytes) -> tuple[int, object]:
    try:
        spec = json.loads(body or b"{}")
        if not isinstance(spec, dict) or set(spec) - {"status", "code"}:
            raise TypeError('expected {"status": HTTP status or null} or {"code": error code}')
        status, code = spec.get("status"), spec.get("code")
        for value in (status, code):
            if value is not None and type(value) is not int:
                raise TypeError("status and code must be integers or null")
        sandbox.set_outage(status=status, code=code)
    except (ValueError, TypeError) as exc:
        return 400, {"error": f"bad outage request: {exc}"}
    return 200, {"outage": sandbox.outage}


def _inject(sandbox: Controls, body: bytes) -> tuple[int, object]:
    try:
        spec = json.loads(body or b"{}")
        if not isinstance(spec, dict) or not {"account", "type", "kind"} <= set(spec):
            raise TypeError('expected {"account": "A", "type": 1, "kind": "empty-page"}')
        sandbox.inject(spec["account"], spec["type"], spec["kind"], spec.get("times", 1))
    except (ValueError, TypeError) as exc:
        return 400, {"error": f"bad inject request: {exc}"}
    return 200, {"ok": True}


def _truth(sandbox: Controls, query: Mapping[str, str]) -> tuple[int, object]:
    account = query.get("account", "")
    follow_type = query.get("type", "")
    if follow_type not in ("1", "2", "3"):
        return 400, {"error": "type must be 1, 2 or 3"}
    graph = sandbox.graph
    view = graph.view(account, int(follow_type))
    if view is None:
        return 404, {"error": f"account {account!r} does not exist"}
    items = dict(zip(view.ids, view.times, strict=True))
    profiles = {uid: list(graph.profile(uid)) for uid in view.ids}
    return 200, {"items": items, "profiles": profiles}


def _accounts(sandbox: Controls, query: Mapping[str, str]) -> tuple[int, object]:
    graph = sandbox.graph
    if "top" not in query and "by" not in query:
        return 200, {"accounts": graph.accounts}
    by, top = query.get("by", "fans"), query.get("top", "")
    if by not in _BY:
        return 400, {"error": "by must be fans, follows or mutual"}
    if top and not (top.isascii() and top.isdigit() and len(top) <= 9):
        return 400, {"error": "top must be a non-negative integer"}
    column = _BY[by]
    sized = []
    for account in graph.accounts:
        counts = graph.counts(account)
        if counts is not None:
            sized.append((-counts[column], account))
    sized.sort()
    if top:
        del sized[int(top) :]
    return 200, {"accounts": [a for _, a in sized], "counts": [-n for n, _ in sized], "by": by}


def _truth_digest(sandbox: Controls, body: bytes) -> tuple[int, object]:
    try:
        spec = json.loads(body or b"{}")
        accounts = spec["accounts"] if isinstance(spec, dict) else None
        types = spec.get("types", list(FOLLOW_TYPES)) if isinstance(spec, dict) else None
        if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
            raise TypeError("accounts must be a list of strings")
        if not isinstance(types, list) or not set(types) <= set(FOLLOW_TYPES) or not types:
            raise TypeError("types must be a non-empty list of 1, 2, 3")
        if len(accounts) > _DIGEST_LIMIT:
            raise ValueError(f"at most {_DIGEST_LIMIT} accounts per request")
    except (ValueError, TypeError, KeyError) as exc:
        return 400, {"error": f"bad truth-digest request: {exc}"}
    graph = sandbox.graph
    lists: dict[str, dict[str, object]] = {}
    missing = []
    for account in dict.fromkeys(accounts):
        for follow_type in types:
            view = graph.view(account, follow_type)
            if view is None:
                missing.append(account)
                break
            digest = list_digest(zip(view.ids, view.times, strict=True))
            lists[f"{account}/{follow_type}"] = {"count": len(view.ids), "digest": digest}
    return 200, {"lists": lists, "missing": missing}
