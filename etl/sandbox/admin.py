"""The sandbox's own admin routes (not Tencent's, no auth): stats, accounts, truth, mutate.

Tests, the demo and benchmarks use them to drive a sandbox running in another process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etl.sandbox.app import Sandbox

_PATHS = frozenset(
    f"/sandbox/{name}" for name in ("stats", "accounts", "reset-stats", "mutate", "truth")
)


def answer(
    sandbox: Sandbox, method: str, path: str, query: Mapping[str, str], body: bytes
) -> tuple[int, object]:
    """(HTTP status, JSON-ready answer) for one admin request."""
    route = (method, path)
    if route == ("GET", "/sandbox/stats"):
        return 200, sandbox.stats()
    if route == ("GET", "/sandbox/accounts"):
        return 200, {"accounts": sandbox.graph.accounts}
    if route == ("POST", "/sandbox/reset-stats"):
        sandbox.reset_stats()
        return 200, {"ok": True}
    if route == ("POST", "/sandbox/mutate"):
        return _mutate(sandbox, body)
    if route == ("GET", "/sandbox/truth"):
        return _truth(sandbox, query)
    if path in _PATHS:
        return 405, {"error": f"{method} not allowed on {path}"}
    return 404, {"error": "not found", "path": path}


def _mutate(sandbox: Sandbox, body: bytes) -> tuple[int, object]:
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


def _truth(sandbox: Sandbox, query: Mapping[str, str]) -> tuple[int, object]:
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
