"""The UserSig is added below httpx: its logs, exceptions and responses never hold it."""

from __future__ import annotations

import logging

import httpx
import pytest

from etl.errors import TransientApiError
from etl.tencent.client import FollowClient
from etl.tencent.signing import SigningTransport
from etl.tencent.usersig import UserSigSource
from tests.unit.test_client import client_on, settings

SIG = "sig-Zq81xw"


def echo(request: httpx.Request) -> httpx.Response:
    """Answer with the query string the transport was handed."""
    return httpx.Response(200, json={"query": request.url.query.decode()})


def test_the_inner_transport_gets_the_usersig_and_httpx_never_sees_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the inner transport's copy is signed: httpx's log line, the request and the
    response it returns name the URL without the UserSig."""
    transport = SigningTransport(httpx.MockTransport(echo), lambda: SIG)
    caplog.set_level(logging.DEBUG)
    # An earlier test may have quieted httpx's logger (the CLI's logging set-up does).
    caplog.set_level(logging.DEBUG, logger="httpx")
    with httpx.Client(transport=transport) as http:
        response = http.post("https://api.test/v4/x", params={"sdkappid": "1"})
    assert response.json() == {"query": f"sdkappid=1&usersig={SIG}"}
    assert "usersig" not in str(response.request.url)
    assert "usersig" not in str(response.url)
    assert any("HTTP Request: POST https://api.test/v4/x" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if SIG in r.getMessage()]


def test_the_inner_transport_can_read_the_body() -> None:
    """An injected transport sees the request as httpx built it: ``.content`` in hand."""
    transport = SigningTransport(
        httpx.MockTransport(lambda request: httpx.Response(200, content=request.content)),
        lambda: SIG,
    )
    with httpx.Client(transport=transport) as http:
        assert http.post("https://api.test/x", content=b'{"a":1}').content == b'{"a":1}'


def test_a_failing_inner_transport_raises_without_the_usersig() -> None:
    """An exception from below carries the unsigned request, never the UserSig."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused {request.url}")

    transport = SigningTransport(httpx.MockTransport(refuse), lambda: SIG)
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ConnectError) as caught:
        http.post("https://api.test/v4/x")
    assert "usersig" not in str(caught.value.request.url)


def test_each_request_is_signed_with_the_current_usersig() -> None:
    """A renewed UserSig is used from the next request on."""
    sigs = iter(["first", "second"])
    transport = SigningTransport(httpx.MockTransport(echo), lambda: next(sigs))
    with httpx.Client(transport=transport) as http:
        answers = [http.post("https://api.test/x").json()["query"] for _ in range(2)]
    assert answers == ["usersig=first", "usersig=second"]


def test_closing_the_client_closes_the_inner_transport() -> None:
    """The wrapper hands close() down, so the pooled connections are released."""
    closed: list[bool] = []

    class Inner(httpx.MockTransport):
        def close(self) -> None:
            closed.append(True)

    with httpx.Client(transport=SigningTransport(Inner(echo), lambda: SIG)):
        pass
    assert closed == [True]


def test_a_client_with_httpx_own_transports_signs_through_every_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without an injected transport, httpx's pool and the proxies the environment names are
    all wrapped, so a proxied request is signed too (and a change in httpx fails here)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "backup.test")
    api = settings()
    source = UserSigSource(sdkappid=1, identifier="a", secret_key="k", clock=lambda: 1.0)
    with FollowClient(api, source) as client:
        http = client._http
        chosen = [http._transport_for_url(httpx.URL(base)) for base in api.base_urls]
        assert all(isinstance(t, SigningTransport) for t in chosen)
        assert isinstance(chosen[0], SigningTransport)  # (narrows chosen[0] for the next line)
        assert isinstance(chosen[0].inner, httpx.HTTPTransport)
        assert chosen[0] is not chosen[1]  # the proxy's for primary.test, the pool for backup


def test_a_request_error_never_names_the_usersig(caplog: pytest.LogCaptureFixture) -> None:
    """A refused connection, retried and given up, leaves no UserSig in the error, its
    chained httpx exception or any log record."""
    seen: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["usersig"])
        raise httpx.ConnectError("[Errno 111] Connection refused")

    caplog.set_level(logging.DEBUG)
    client = client_on(httpx.MockTransport(refuse), attempts=2)
    with client, pytest.raises(TransientApiError) as caught:
        client.follow_get("a", 1, "", 10)
    context = caught.value.__context__
    assert isinstance(context, httpx.ConnectError)
    for sig in (seen[0], str(httpx.QueryParams({"usersig": seen[0]}))):
        assert sig not in str(caught.value)
        assert sig not in str(context.request.url)
        assert not [r for r in caplog.records if sig in r.getMessage()]
