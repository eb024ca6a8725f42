"""The client: which answers are retried, which stop the run, and how calls are paced."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from etl.config import ApiSettings, RetryPolicy, Secret
from etl.errors import (
    AccountNotFound,
    FatalApiError,
    MalformedAnswer,
    RateLimitedError,
    RequestRejected,
    Stopped,
    TransientApiError,
)
from etl.sandbox import Graph, Sandbox, SandboxConfig
from etl.sandbox.faults import MALFORMED_KINDS
from etl.tencent.client import FollowClient
from etl.tencent.exact_json import parse_json
from etl.tencent.pacer import Pacer
from etl.tencent.page import Page
from etl.tencent.usersig import UserSigSource

OK = {"FollowItem": [], "NextCursor": "", "ActionStatus": "OK", "ErrorCode": 0}


def fail(code: int) -> httpx.Response:
    """A FAIL answer with ``code``."""
    body = {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": "x", "ErrorDisplay": ""}
    return httpx.Response(200, json=body)


Script = list[httpx.Response | Exception]


def settings(attempts: int = 4, secret: bool = True, wait: float = 0.0) -> ApiSettings:
    """API settings for the test domains; ``wait`` seconds of backoff before each retry."""
    return ApiSettings(
        sdkappid=1400000001,
        admin="administrator",
        base_urls=("https://primary.test", "https://backup.test"),
        secret_key=Secret("key") if secret else None,
        usersig=None if secret else Secret("fixed-sig"),
        rate=10_000,
        timeout=5,
        retry=RetryPolicy(attempts=attempts, max_seconds=60, initial_wait=wait, max_wait=wait),
    )


def client_for(
    script: Script,
    attempts: int = 4,
    secret: bool = True,
    *,
    wait: float = 0.0,
    stop: threading.Event | None = None,
) -> tuple[FollowClient, list[httpx.Request]]:
    """A client whose transport answers from ``script`` in order, recording requests."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    return client_on(httpx.MockTransport(answer), attempts, secret, wait=wait, stop=stop), seen


def client_on(
    transport: httpx.BaseTransport,
    attempts: int = 4,
    secret: bool = True,
    *,
    wait: float = 0.0,
    stop: threading.Event | None = None,
) -> FollowClient:
    """A client of the test domains on ``transport``."""
    api = settings(attempts, secret, wait)
    source = UserSigSource(
        sdkappid=api.sdkappid,
        identifier=api.admin,
        secret_key="key" if secret else None,
        fixed=None if secret else "fixed-sig",
        clock=lambda: 1_700_000_000,
    )
    return FollowClient(api, source, transport=transport, stop=stop)


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
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("peer closed"),
    ],
)
def test_transient_answers_are_retried(transient: httpx.Response | Exception) -> None:
    """Each transient condition of the reference is retried, then the answer is returned."""
    client, seen = client_for([transient, httpx.Response(200, json=OK)])
    with client:
        assert client.follow_get("a", 1, "", 100) == Page.of([], "")
    assert len(seen) == 2
    assert client.retries == 1
    assert client.malformed == 0


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
    """A page with an integer beyond 64 bits is parsed exactly (by json), not retried."""
    item = b'{"To_Account": "u", "profile_sequence": ' + str(2**64 + 1).encode() + b"}"
    raw = b'{"FollowItem": [' + item + b'], "NextCursor": "", "ActionStatus": "OK", "ErrorCode": 0}'
    client, seen = client_for([httpx.Response(200, content=raw)])
    sequence = client.follow_get("a", 1, "", 10).items[0].profile_sequence
    assert sequence == 2**64 + 1
    assert type(sequence) is int
    assert len(seen) == 1


# ---- malformed answers -------------------------------------------------------------------


def ok(**fields: object) -> dict[str, object]:
    """An OK answer with ``fields`` set (None deletes a field)."""
    body: dict[str, object] = {**OK, **fields}
    return {name: value for name, value in body.items() if value is not None}


@pytest.mark.parametrize(
    "bad",
    [
        httpx.Response(200, text="<html><body>Service Unavailable</body></html>"),
        httpx.Response(200, content=b""),
        httpx.Response(200, text='{"FollowItem": [{"To_Acc'),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"ActionStatus": "OK", "ErrorCode": 0}),
        httpx.Response(200, json=ok(NextCursor=None)),
        httpx.Response(200, json={**OK, "NextCursor": None}),
        httpx.Response(200, json=ok(NextCursor=5)),
        httpx.Response(200, json=ok(FollowItem=None)),
        httpx.Response(200, json=ok(FollowItem={"To_Account": "b"})),
        httpx.Response(200, json=ok(FollowItem=[{"FollowTime": 1}])),
        httpx.Response(200, json=ok(FollowItem=[{"To_Account": 7}])),
        httpx.Response(200, json=ok(ActionStatus="FAIL")),
        httpx.Response(200, json=ok(ErrorCode="0")),
        httpx.Response(200, content=b'{"a": NaN}'),
        httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000),
    ],
)
def test_malformed_answers_are_retried_and_counted(bad: httpx.Response) -> None:
    """HTTP 200 without a usable page is a MalformedAnswer: retried, counted, then the page."""
    good = ok(FollowItem=[{"To_Account": "b"}], NextCursor="c2")
    client, seen = client_for([bad, httpx.Response(200, json=good)])
    with client:
        page = client.follow_get("a", 1, "", 100)
    assert ([item.To_Account for item in page.items], page.next_cursor) == (["b"], "c2")
    assert len(seen) == 2
    assert (client.malformed, client.retries) == (1, 1)
    assert client.counters() == {"calls": 2, "retries": 1, "malformed": 1}


def test_malformed_answers_use_up_the_attempts_then_raise() -> None:
    """A service that never answers a page raises MalformedAnswer after the last attempt."""
    bare = {"ActionStatus": "OK", "ErrorCode": 0}
    client, seen = client_for([httpx.Response(200, json=bare) for _ in range(3)], attempts=3)
    with client, pytest.raises(MalformedAnswer, match=r"follow_get a/1: FollowItem is missing"):
        client.follow_get("a", 1, "", 100)
    assert len(seen) == 3
    assert client.malformed == 3


def test_a_malformed_answer_is_logged_before_the_retry(caplog: pytest.LogCaptureFixture) -> None:
    """The retry of a malformed answer is logged like any other, with what was wrong."""
    client, _ = client_for(
        [httpx.Response(200, json=ok(NextCursor=None)), httpx.Response(200, json=OK)]
    )
    with caplog.at_level(logging.WARNING, logger="etl.tencent.client"), client:
        client.follow_get("a", 1, "", 100)
    (record,) = caplog.records
    assert "follow_get a/1: NextCursor is missing or null" in record.getMessage()
    assert "retry 1" in record.getMessage()


def test_follow_get_info_without_follow_info_is_malformed() -> None:
    """An OK follow_get_info answer without its FollowInfo array is retried; the dict returns."""
    info = {"ActionStatus": "OK", "ErrorCode": 0, "FollowInfo": [{"To_Account": "a"}]}
    client, _ = client_for(
        [httpx.Response(200, json={"ActionStatus": "OK"}), httpx.Response(200, json=info)]
    )
    with client:
        assert client.follow_get_info(["a"]) == info
    assert client.malformed == 1


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_every_sandbox_malformed_kind_is_retried_until_a_good_page(kind: str) -> None:
    """Each shape of the sandbox's "malformed" fault is a MalformedAnswer; the retry then
    gets the real page."""
    graph = Graph(200, seed=4)
    faulty = sandbox_transport(
        graph, faults=1.0, fault_kinds=("malformed",), malformed_kinds=(kind,)
    )
    good = sandbox_transport(graph)
    calls = [0]

    def answer(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        return (faulty if calls[0] <= 2 else good).handle_request(request)

    account = max(graph.accounts, key=lambda a: len(graph.list_ids(a, 1)))
    with client_on(httpx.MockTransport(answer)) as client:
        page = client.follow_get(account, 1, "", 5)
        info = client.follow_get_info([account])
    assert [item.To_Account for item in page.items] == graph.list_ids(account, 1)[:5]
    assert page.next_cursor
    assert info["FollowInfo"][0]["FollowerCount"] == len(graph.list_ids(account, 1))
    assert client.malformed == 2
    assert calls[0] == 4


def sandbox_transport(graph: Graph, **config: Any) -> httpx.MockTransport:
    """The sandbox's in-process transport, with the client's app credentials."""
    base = SandboxConfig(sdkappid=1400000001, admin="administrator", secret_key="key")
    clock = lambda: 1_700_000_000.0  # noqa: E731 - the clock the client's UserSig was made with
    return Sandbox(graph, dataclasses.replace(base, **config), clock).transport()


# ---- the JSON decoder --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (str(2**64 + 1).encode(), 2**64 + 1),
        (str(-(2**63) - 1).encode(), -(2**63) - 1),
        (str(2**64 - 1).encode(), 2**64 - 1),
        (b'"\\ud83d"', "\ud83d"),
        (b'"a\\u0000b"', "a\x00b"),
        (b'"\\udc00 low"', "\udc00 low"),
        (b"1e400", "1e400"),
        (b"-1e400", "-1e400"),
        (b'"caf\xc3\xa9"', "caf\u00e9"),
        (b'"bad \xff byte"', "bad \ufffd byte"),
        (
            b'{"n": 12345678901234567890123, "s": "\\ud83d"}',
            {"n": 12345678901234567890123, "s": "\ud83d"},
        ),
    ],
)
def test_parse_json_keeps_values_exact(raw: bytes, value: object) -> None:
    """Integers past 64 bits stay exact, lone surrogates and NUL come through, overflowing
    floats keep their text, bytes that are not UTF-8 become U+FFFD."""
    assert parse_json(raw) == value
    assert type(parse_json(raw)) is type(value)


def test_parse_json_keeps_an_integer_too_long_for_int_as_digits() -> None:
    """A 5000-digit integer (past Python's int-from-text limit) is kept as its digit string."""
    digits = "7" * 5000
    assert parse_json(b'{"v": ' + digits.encode() + b"}") == {"v": digits}
    assert parse_json(b"-" + digits.encode()) == "-" + digits


@pytest.mark.parametrize(
    "raw", [b"", b"   ", b"NaN", b'{"a": Infinity}', b"[1,", b"<html>", b"[" * 5000 + b"]" * 5000]
)
def test_parse_json_refuses_what_is_not_json(raw: bytes) -> None:
    """Empty, truncated, HTML, NaN, and nesting past what Python can hold: MalformedAnswer."""
    with pytest.raises(MalformedAnswer, match="not JSON"):
        parse_json(raw)


def test_a_hostile_page_decodes_into_a_page() -> None:
    """A page with a NUL, a lone surrogate and a huge sequence is a page, not retried."""
    raw = (
        b'{"FollowItem":[{"To_Account":"evil\\u0000\\ud83d","profile_sequence":'
        + b"9" * 25
        + b',"ProfileItem":[{"Tag":"Tag_Profile_IM_Nick","Value":"\\ud83d"}]}],'
        + b'"NextCursor":"","ActionStatus":"OK","ErrorCode":0}'
    )
    client, seen = client_for([httpx.Response(200, content=raw)])
    with client:
        (item,) = client.follow_get("a", 1, "", 10).items
    assert item.To_Account == "evil\x00\ud83d"
    assert item.profile_sequence == int("9" * 25)
    assert item.profile()[0]["Value"] == "\ud83d"
    assert len(seen) == 1


def test_a_cursor_with_a_lone_surrogate_can_be_sent_back() -> None:
    """The request body is ASCII JSON, so any cursor the service sent can go back to it."""
    client, seen = client_for([httpx.Response(200, json=OK)])
    with client:
        client.follow_get("a", 1, "c\ud83d\x00", 10)
    assert seen[0].content.isascii()
    assert json.loads(seen[0].content)["StartCursor"] == "c\ud83d\x00"


# ---- httpx failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [httpx.DecodingError, httpx.TooManyRedirects, httpx.RemoteProtocolError, httpx.ReadError],
)
def test_httpx_errors_are_transient_and_never_show_the_url(error: type[httpx.RequestError]) -> None:
    """Any httpx failure is a TransientApiError (retried) whose message has no URL in it."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise error(f"failed at {request.url}", request=request)

    client = client_on(httpx.MockTransport(answer), attempts=2)
    with client, pytest.raises(TransientApiError) as caught:
        client.follow_get("a", 1, "", 10)
    assert len(seen) == 2
    message = str(caught.value)
    assert error.__name__ in message
    assert seen[0].url.params["usersig"] not in message
    assert "http" not in message.replace("HTTP error", "")


def test_errors_info_is_made_printable() -> None:
    """A service's ErrorInfo with control characters or a lone surrogate is one safe line."""
    body = {"ActionStatus": "FAIL", "ErrorCode": 91234, "ErrorInfo": "bad\nline\ud83d\x00"}
    client, _ = client_for([httpx.Response(200, content=json.dumps(body).encode())])
    with client, pytest.raises(FatalApiError) as caught:
        client.follow_get("a", 1, "", 10)
    assert str(caught.value) == "follow_get a/1: bad?line?? (91234)"


# ---- stop --------------------------------------------------------------------------------


def stop_soon(delay: float = 0.1) -> threading.Event:
    """An event that a timer sets after ``delay`` seconds."""
    stop = threading.Event()
    timer = threading.Timer(delay, stop.set)
    timer.daemon = True
    timer.start()
    return stop


def test_stop_cuts_a_retry_backoff_short() -> None:
    """A stop set during a 30 s backoff makes follow_get raise Stopped at once, not retried."""
    stop = stop_soon()
    client, seen = client_for([fail(30006), httpx.Response(200, json=OK)], wait=30, stop=stop)
    started = time.monotonic()
    with client, pytest.raises(Stopped):
        client.follow_get("a", 1, "", 10)
    assert time.monotonic() - started < 0.5
    assert len(seen) == 1


def test_stop_cuts_a_pacing_wait_short() -> None:
    """A stop set while the pacer holds the next call for 30 s raises Stopped at once."""
    stop = stop_soon()
    client, seen = client_for([httpx.Response(200, json=OK)], stop=stop)
    client.pacer.hold(30)
    started = time.monotonic()
    with client, pytest.raises(Stopped):
        client.follow_get("a", 1, "", 10)
    assert time.monotonic() - started < 0.5
    assert seen == []


def test_pacer_wait_wakes_on_stop() -> None:
    """Pacer.wait between two calls 30 s apart raises Stopped as soon as stop is set."""
    pacer = Pacer(1 / 30, stop=stop_soon())
    pacer.wait()
    started = time.monotonic()
    with pytest.raises(Stopped):
        pacer.wait()
    assert time.monotonic() - started < 0.5


def test_no_call_starts_once_stop_is_set() -> None:
    """With stop already set, follow_get raises Stopped without a request."""
    stop = threading.Event()
    stop.set()
    client, seen = client_for([httpx.Response(200, json=OK)], stop=stop)
    with client, pytest.raises(Stopped):
        client.follow_get("a", 1, "", 10)
    assert seen == []


def test_interrupt_on_switches_the_event_waits_wake_on() -> None:
    """After interrupt_on(event), setting that event cuts a backoff short; None undoes it."""
    client, seen = client_for([fail(30006), httpx.Response(200, json=OK)], wait=30)
    client.interrupt_on(stop_soon())
    started = time.monotonic()
    with client, pytest.raises(Stopped):
        client.follow_get("a", 1, "", 10)
    assert time.monotonic() - started < 0.5
    assert len(seen) == 1

    client, _ = client_for([fail(30006), httpx.Response(200, json=OK)])
    earlier = threading.Event()
    client.interrupt_on(earlier)
    client.interrupt_on(None)
    earlier.set()
    with client:
        assert client.follow_get("a", 1, "", 10) == Page.of([], "")
