"""The sandbox's injected faults: random kinds, malformed answers, outages and targeted faults."""

from __future__ import annotations

import json

import pytest

from etl.errors import MalformedAnswer
from etl.sandbox import Graph, Sandbox, SandboxConfig
from etl.sandbox.faults import DEFAULT_FAULT_KINDS, FAULT_KINDS, MALFORMED_KINDS
from etl.tencent.exact_json import parse_json
from etl.tencent.page import parse_page
from tests.unit.sandbox_helpers import FOLLOW_GET, FakeClock, call, most_fans, query


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("30006", 200, 30006), ("30007", 200, 30007), ("502", 502, None), ("503", 503, None)],
)
def test_fault_kind_is_injected(graph: Graph, kind: str, status: int, code: int | None) -> None:
    """With faults=1.0 and one kind, every call fails in that way."""
    sandbox = Sandbox(graph, SandboxConfig(faults=1.0, fault_kinds=(kind,)), clock=FakeClock())
    body = json.dumps({"From_Account": "user_000001", "FollowType": 2}).encode()
    response = sandbox.handle("POST", FOLLOW_GET, query(), body)
    assert response.status == status
    if code is not None:
        assert json.loads(response.body)["ErrorCode"] == code
    assert sandbox.stats()["by_fault"] == {kind: 1}


def test_truncated_fault_cuts_the_real_answer(graph: Graph, sandbox: Sandbox) -> None:
    """A truncated answer is the first half of the real one and is flagged for the transport."""
    faulty = Sandbox(graph, SandboxConfig(faults=1.0, fault_kinds=("truncated",)), FakeClock())
    body = json.dumps({"From_Account": "user_000001", "FollowType": 2}).encode()
    real = sandbox.handle("POST", FOLLOW_GET, query(), body)
    cut = faulty.handle("POST", FOLLOW_GET, query(), body)
    assert cut.truncated
    assert cut.full_length == len(real.body)
    assert cut.body == real.body[: len(real.body) // 2]


def test_slow_fault_is_a_delay_on_the_real_answer(graph: Graph, sandbox: Sandbox) -> None:
    """A slow answer is the real answer with slow_ms of delay, not slept inside handle."""
    config = SandboxConfig(faults=1.0, fault_kinds=("slow",), slow_ms=4000)
    slow = Sandbox(graph, config, FakeClock())
    body = json.dumps({"From_Account": "user_000001", "FollowType": 2}).encode()
    response = slow.handle("POST", FOLLOW_GET, query(), body)
    assert response.delay == 4.0
    assert response.body == sandbox.handle("POST", FOLLOW_GET, query(), body).body


def test_malformed_is_a_fault_kind_but_not_a_default_one() -> None:
    """faults= alone draws from today's kinds; "malformed" must be asked for."""
    assert "malformed" in FAULT_KINDS
    assert "malformed" not in DEFAULT_FAULT_KINDS
    assert SandboxConfig().fault_kinds == DEFAULT_FAULT_KINDS
    with pytest.raises(ValueError, match="malformed_kinds"):
        SandboxConfig(malformed_kinds=("nonsense",))


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_fault_is_ok_but_not_a_page(graph: Graph, kind: str) -> None:
    """Each malformed shape is HTTP 200 (ErrorCode 0 where it is JSON) and fails the page
    contract."""
    config = SandboxConfig(faults=1.0, fault_kinds=("malformed",), malformed_kinds=(kind,))
    sandbox = Sandbox(graph, config, clock=FakeClock())
    body = json.dumps({"From_Account": most_fans(graph), "FollowType": 1, "WantNum": 3})
    response = sandbox.handle("POST", FOLLOW_GET, query(), body.encode())
    assert response.status == 200
    assert sandbox.stats()["by_fault"] == {"malformed": 1}
    if kind == "html":
        assert response.content_type == "text/html"
    if kind not in ("html", "empty"):
        answer = json.loads(response.body)
        assert (answer["ActionStatus"], answer["ErrorCode"]) == ("OK", 0)
    with pytest.raises(MalformedAnswer):
        parse_page(parse_json(response.body))


def test_malformed_follow_get_info_is_bare_html_or_empty(graph: Graph) -> None:
    """follow_get_info hit by a malformed fault answers OK without FollowInfo, or not JSON."""
    config = SandboxConfig(faults=1.0, fault_kinds=("malformed",), malformed_kinds=("items-null",))
    sandbox = Sandbox(graph, config, clock=FakeClock())
    body = {"From_Account": "user_000001", "To_Account": ["user_000001"]}
    answer = call(sandbox, body, path="/v4/follow/follow_get_info")
    assert answer == {"ActionStatus": "OK", "ErrorCode": 0}


def test_malformed_faults_follow_the_fault_seed(graph: Graph) -> None:
    """Two sandboxes with the same fault_seed give the same answers, call for call."""
    config = SandboxConfig(faults=0.5, fault_kinds=("malformed", "30006"), fault_seed=7)
    a, b = Sandbox(graph, config, FakeClock()), Sandbox(graph, config, FakeClock())
    body = json.dumps({"From_Account": most_fans(graph), "FollowType": 1, "WantNum": 2}).encode()
    first = [a.handle("POST", FOLLOW_GET, query(), body).body for _ in range(40)]
    assert first == [b.handle("POST", FOLLOW_GET, query(), body).body for _ in range(40)]
    assert len(set(first)) > 3


def test_outage_answers_every_call_with_a_status_until_ended(sandbox: Sandbox) -> None:
    """POST /sandbox/outage {"status": 503} makes every API call a 503; null ends it."""
    get = json.dumps({"From_Account": "user_000001", "FollowType": 2}).encode()
    info = json.dumps({"From_Account": "user_000001", "To_Account": ["user_000001"]}).encode()
    started = sandbox.handle("POST", "/sandbox/outage", {}, b'{"status": 503}')
    assert json.loads(started.body) == {"outage": {"status": 503}}
    assert sandbox.handle("POST", FOLLOW_GET, query(), get).status == 503
    assert sandbox.handle("POST", "/v4/follow/follow_get_info", query(), info).status == 503
    assert sandbox.handle("GET", FOLLOW_GET, {}, b"").status == 503  # before any check
    state = json.loads(sandbox.handle("GET", "/sandbox/outage", {}, b"").body)
    assert state == {"outage": {"status": 503}}
    ended = sandbox.handle("POST", "/sandbox/outage", {}, b'{"status": null}')
    assert json.loads(ended.body) == {"outage": None}
    assert json.loads(sandbox.handle("POST", FOLLOW_GET, query(), get).body)["ErrorCode"] == 0
    assert sandbox.stats()["by_fault"] == {"outage": 3}


def test_outage_with_a_tencent_code(sandbox: Sandbox) -> None:
    """{"code": 30006} answers every authenticated call with that code; auth errors first."""
    sandbox.handle("POST", "/sandbox/outage", {}, b'{"code": 30006}')
    body = {"From_Account": "user_000001", "FollowType": 2}
    assert call(sandbox, body)["ErrorCode"] == 30006
    assert call(sandbox, body, query(sdkappid="1400000002"))["ErrorCode"] == 60005
    sandbox.handle("POST", "/sandbox/outage", {}, b"{}")
    assert call(sandbox, body)["ErrorCode"] == 0


def test_an_injected_empty_page_is_a_well_formed_last_page_once(sandbox: Sandbox) -> None:
    """POST /sandbox/inject "empty-page": the list's next call answers OK with no items and an
    empty NextCursor (indistinguishable in form from a list that emptied); the call after, and
    other lists, are answered as ever."""
    account = most_fans(sandbox.graph)
    spec = {"account": account, "type": 1, "kind": "empty-page"}
    assert sandbox.handle("POST", "/sandbox/inject", {}, json.dumps(spec).encode()).status == 200
    body = {"From_Account": account, "FollowType": 1, "WantNum": 10}
    assert call(sandbox, {"From_Account": account, "FollowType": 2})["ErrorCode"] == 0
    empty = call(sandbox, body)
    assert empty == {
        "FollowItem": [],
        "NextCursor": "",
        "ActionStatus": "OK",
        "ErrorCode": 0,
        "ErrorInfo": "",
        "ErrorDisplay": "",
    }
    assert len(call(sandbox, body)["FollowItem"]) == 10


def test_an_injected_30003_answers_as_many_calls_as_asked(sandbox: Sandbox) -> None:
    """inject(..., "30003", times=2): two calls of that list say the account does not exist."""
    account = most_fans(sandbox.graph)
    sandbox.inject(account, 1, "30003", times=2)
    body = {"From_Account": account, "FollowType": 1}
    assert [call(sandbox, body)["ErrorCode"] for _ in range(3)] == [30003, 30003, 0]
