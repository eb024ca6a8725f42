"""Shared helpers of the sandbox tests: a hand-moved clock, valid URL parameters, calls."""

from __future__ import annotations

import json
from typing import Any

from etl.sandbox import Graph, Sandbox, SandboxConfig
from etl.sandbox.hostile import BigNumber
from etl.tencent import usersig

NOW = 1_750_000_000
CONFIG = SandboxConfig()
FOLLOW_GET = "/v4/follow/follow_get"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def query(*, config: SandboxConfig = CONFIG, **overrides: str) -> dict[str, str]:
    """Valid URL parameters for config's administrator, with some replaced."""
    sig = usersig.generate(config.sdkappid, config.admin, config.secret_key, now=NOW)
    params = {
        "sdkappid": str(config.sdkappid),
        "identifier": config.admin,
        "usersig": sig,
        "random": "12345",
        "contenttype": "json",
    }
    params.update(overrides)
    return params


def call(
    sandbox: Sandbox, body: object, params: dict[str, str] | None = None, path: str = FOLLOW_GET
) -> dict[str, Any]:
    """POST body to the sandbox and decode the JSON answer."""
    response = sandbox.handle(
        "POST", path, params or query(config=sandbox.config), json.dumps(body).encode()
    )
    assert response.status == 200
    decoded: dict[str, Any] = json.loads(response.body)
    return decoded


def page_all(sandbox: Sandbox, account: str, follow_type: int, want: int) -> list[dict[str, Any]]:
    """Every item of one list, paged with the service's cursors."""
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        body = {"From_Account": account, "FollowType": follow_type, "WantNum": want}
        answer = call(sandbox, {**body, "StartCursor": cursor})
        assert answer["ErrorCode"] == 0, answer
        items.extend(answer["FollowItem"])
        cursor = answer["NextCursor"]
        if not cursor:
            return items


def most_fans(graph: Graph) -> str:
    """The account with the longest fan list."""
    return max(graph.accounts, key=lambda a: len(graph.list_ids(a, 1)))


def profile_values(graph: Graph, users: list[str]) -> list[tuple[int, dict[str, object]]]:
    """(sequence, Tag -> Value) of each user."""
    return [
        (seq, {str(tag["Tag"]): tag["Value"] for tag in tags})
        for seq, tags in map(graph.profile, users)
    ]


def plain(value: object) -> object:
    """A graph value as an exact JSON decoder gives it back (BigNumber -> its digits)."""
    if isinstance(value, BigNumber):
        return value.digits
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
