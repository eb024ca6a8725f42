"""The client: which answers are retried, which stop the run, and how calls are paced."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from etl.client import FollowClient, Pacer
from etl.config import ApiSettings, RetryPolicy, Secret
from etl.errors import (
    AccountNotFound,
    FatalApiError,
    RateLimitedError,
    RequestRejected,
    TransientApiError,
)
from etl.usersig import UserSigSource

OK = {"FollowItem": [], "NextCursor": "", "ActionStatus": "OK", "ErrorCode": 0}


def fail(code: int) -> httpx.Response:
    """A FAIL answer with ``code``."""
    body = {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": "x", "ErrorDisplay": ""}
    return httpx.Response(200, json=body)


Script = list[httpx.Response | Exception]


def client_for(
    script: Script, attempts: int = 4, secret: bool = True
) -> tuple[FollowClient, list[httpx.Request]]:
    """A client whose transport answers from ``script`` in order, recording requests."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    api = ApiSettings(
        sdkappid=1400000001,
        admin="administrator",
        base_urls=("https://primary.test", "https://backup.test"),
        secret_key=Secret("key") if secret else None,
        usersig=None if secret else Secret("fixed-sig"),
        rate=10_000,
        timeout=5,
        retry=RetryPolicy(attempts=attempts, max_seconds=30, initial_wait=0, max_wait=0),
    )
    source = UserSigSource(
        sdkappid=api.sdkappid,
        identifier=api.admin,
        secret_key="key" if secret else None,
        fixed=None if secret else "fixed-sig",
        clock=lambda: 1_700_000_000,
    )
    return FollowClient(api, source, transport=httpx.MockTransport(answer)), seen


@pytest.mark.parametrize(
    "transient",
    [
        fail(30006),
        fail(30007),
        fail(60008),
        fail(60014),
        fail(60007),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(503),
        httpx.Response(200, text='{"FollowItem": [{"To_Acc'),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("peer closed"),
    ],
)
def test_transient_answers_are_retried(transient: httpx.Response | Exception) -> None:
    """Each transient condition of the reference is retried, then the answer is returned."""
    client, seen = client_for([transient, httpx.Response(200, json=OK)])
    with client:
        assert client.follow_get("a", 1, "", 100)["ActionStatus"] == "OK"
    assert len(seen) == 2
    assert client.retries == 1


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (30001, RequestRejected),
        (30002, FatalApiError),
        (30003, AccountNotFound),
        (30004, FatalApiError),
        (30005, FatalApiError),
        (60003, FatalApiError),
        (60006, FatalApiError),
        (60020, FatalApiError),
        (70003, FatalApiError),
        (70009, FatalApiError),
    ],
)
def test_non_transient_answers_are_not_retried(code: int, error: type[Exception]) -> None:
    """Fatal, not-found and parameter errors come back at once as their own exception."""
    client, seen = client_for([fail(code)])
    with client, pytest.raises(error) as caught:
        client.follow_get("a", 1, "", 100)
    assert len(seen) == 1
    assert str(code) in str(caught.value)


def test_retries_are_capped() -> None:
    """After the configured attempts the last transient error is raised."""
    client, seen = client_for([fail(30006)] * 3, attempts=3)
    with client, pytest.raises(TransientApiError, match="30006"):
        client.follow_get("a", 1, "", 100)
    assert len(seen) == 3


def test_rate_limit_is_its_own_error() -> None:
    """60007 and its siblings raise RateLimitedError (a transient error that waits longer)."""
    client, _ = client_for([fail(60011)], attempts=1)
    with client, pytest.raises(RateLimitedError):
        client.follow_get("a", 1, "", 100)


def test_expired_usersig_is_renewed_when_a_key_is_set() -> None:
    """70001 with a secret key: a new UserSig is made and the call retried."""
    client, seen = client_for([fail(70001), httpx.Response(200, json=OK)])
    with client:
        client.follow_get("a", 1, "", 100)
    assert len(seen) == 2


def test_expired_fixed_usersig_is_fatal() -> None:
    """70001 with only a fixed IM_USERSIG cannot be fixed by retrying."""
    client, _ = client_for([fail(70001)], secret=False)
    with client, pytest.raises(FatalApiError, match="IM_SECRET_KEY"):
        client.follow_get("a", 1, "", 100)


def test_request_form() -> None:
    """POST to the API path with the five query parameters and a JSON body."""
    client, seen = client_for([httpx.Response(200, json=OK)])
    with client:
        client.follow_get("user_1", 2, "cur", 1000)
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/v4/follow/follow_get"
    params = request.url.params
    assert sorted(params) == ["contenttype", "identifier", "random", "sdkappid", "usersig"]
    assert params["contenttype"] == "json"
    assert 0 <= int(params["random"]) <= 4294967295
    assert json.loads(request.content) == {
        "From_Account": "user_1",
        "FollowType": 2,
        "StartCursor": "cur",
        "WantNum": 1000,
    }


def test_random_is_fresh_per_request() -> None:
    """Every request carries its own random number."""
    client, seen = client_for([httpx.Response(200, json=OK) for _ in range(5)])
    with client:
        for _ in range(5):
            client.follow_get("a", 1, "", 10)
    assert len({r.url.params["random"] for r in seen}) == 5


def test_network_errors_fail_over_to_the_backup_domain() -> None:
    """A connection error moves the next attempt to the region's backup domain."""
    client, seen = client_for([httpx.ConnectError("down"), httpx.Response(200, json=OK)])
    with client:
        client.follow_get("a", 1, "", 10)
    assert [r.url.host for r in seen] == ["primary.test", "backup.test"]


def test_errors_never_carry_the_usersig() -> None:
    """Error messages name the call, not the URL with its UserSig."""
    client, seen = client_for([httpx.Response(404, text="no")])
    with client, pytest.raises(FatalApiError) as caught:
        client.follow_get("a", 1, "", 10)
    assert seen[0].url.params["usersig"] not in str(caught.value)
    assert "usersig" not in str(caught.value).lower()


def fake_time() -> tuple[Callable[[], float], Callable[[float], None], list[float]]:
    """A clock and a sleep that advances it, recording each sleep."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    return (lambda: now[0]), sleep, sleeps


def test_pacer_spaces_calls() -> None:
    """At rate R, the n-th call starts no earlier than n/R seconds after the first."""
    clock, sleep, sleeps = fake_time()
    pacer = Pacer(50, clock=clock, sleep=sleep)
    for _ in range(101):
        pacer.wait()
    assert sum(sleeps) == pytest.approx(2.0)


def test_pacer_hold_delays_the_next_call() -> None:
    """After hold(s) the next call waits s seconds."""
    clock, sleep, sleeps = fake_time()
    pacer = Pacer(1000, clock=clock, sleep=sleep)
    pacer.wait()
    pacer.hold(0.5)
    pacer.wait()
    assert sleeps == [pytest.approx(0.5)]


def test_pacer_slows_down_on_rate_limits_and_recovers() -> None:
    """slow_down() halves the pace and pauses; the pace then returns to the target, 1% a call."""
    clock, sleep, _ = fake_time()
    pacer = Pacer(100, clock=clock, sleep=sleep)
    pacer.slow_down()
    assert pacer.rate == pytest.approx(50)
    for _ in range(200):
        pacer.wait()
    assert pacer.rate == pytest.approx(100)


def test_pacer_rate_can_change_while_slowed() -> None:
    """A new share of the budget keeps the slow-down factor until it has recovered."""
    clock, sleep, _ = fake_time()
    pacer = Pacer(100, clock=clock, sleep=sleep)
    pacer.slow_down()
    pacer.set_rate(50)
    assert pacer.rate == pytest.approx(25)


def test_rate_limit_answers_slow_the_client_down() -> None:
    """A 60007 halves the client's pace before the retry."""
    client, _ = client_for([fail(60007), httpx.Response(200, json=OK)])
    before = client.pacer.rate
    client.follow_get("a", 1, "", 10)
    assert client.pacer.rate < before


def test_bodies_beyond_orjson_still_parse() -> None:
    """A valid body with an integer beyond 64 bits is parsed (by json), not retried."""
    raw = b'{"FollowItem": [], "NextCursor": "", "ActionStatus": "OK", "ErrorCode": 0, "X": '
    client, seen = client_for([httpx.Response(200, content=raw + str(2**70).encode() + b"}")])
    assert client.follow_get("a", 1, "", 10)["X"] == 2**70
    assert len(seen) == 1
