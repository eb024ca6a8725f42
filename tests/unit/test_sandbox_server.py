"""The sandbox over HTTP: the httpx mock transport and the socket server's keep-alive HTTP/1.1."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlencode

import httpx
import pytest

from etl.sandbox import Graph, Sandbox, SandboxConfig, serve_in_thread
from tests.unit.sandbox_helpers import CONFIG, FOLLOW_GET, FakeClock, most_fans, query


def test_mock_transport_serves_an_httpx_client(sandbox: Sandbox, graph: Graph) -> None:
    """An httpx.Client on the sandbox's MockTransport gets the same answers as handle."""
    with httpx.Client(transport=sandbox.transport(), base_url="https://sandbox") as client:
        account = most_fans(graph)
        body = {"From_Account": account, "FollowType": 1, "WantNum": 3}
        answer = client.post(FOLLOW_GET, params=query(), json=body).json()
    assert [i["To_Account"] for i in answer["FollowItem"]] == graph.list_ids(account, 1)[:3]


def test_real_socket_paging_and_truncation(graph: Graph) -> None:
    """Over a real socket a list pages completely, and a truncated answer is an incomplete read."""
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    account = most_fans(graph)
    items: dict[str, int] = {}
    with serve_in_thread(sandbox) as server, httpx.Client(base_url=server.url) as client:
        cursor = ""
        while True:
            body = {"From_Account": account, "FollowType": 1, "WantNum": 50, "StartCursor": cursor}
            answer = client.post(FOLLOW_GET, params=query(), json=body).json()
            items.update((i["To_Account"], i["FollowTime"]) for i in answer["FollowItem"])
            cursor = answer["NextCursor"]
            if not cursor:
                break
    assert items == graph.list_items(account, 1)

    faulty = Sandbox(graph, SandboxConfig(faults=1.0, fault_kinds=("truncated",)), FakeClock())
    with serve_in_thread(faulty) as server, httpx.Client(base_url=server.url) as client:
        body = {"From_Account": account, "FollowType": 1}
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(FOLLOW_GET, params=query(), json=body)


def raw_exchange(server_url: str, *requests: bytes) -> bytes:
    """Send raw bytes on one connection and read until the server closes it."""
    host, port = server_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for request in requests:
            sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def api_request(sandbox: Sandbox, *, close: bool = False, expect: bool = False) -> bytes:
    """A raw HTTP/1.1 follow_get request, as a client would write it."""
    body = b'{"From_Account":"user_000001","FollowType":2}'
    target = FOLLOW_GET + "?" + urlencode(query(config=sandbox.config))
    headers = [f"POST {target} HTTP/1.1", "Host: sandbox", f"Content-Length: {len(body)}"]
    if close:
        headers.append("Connection: close")
    if expect:
        headers.append("Expect: 100-continue")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def test_server_keeps_the_connection_alive(sandbox: Sandbox) -> None:
    """Requests on one connection get one answer each; the connection closes when asked."""
    with serve_in_thread(sandbox) as server:
        raw = raw_exchange(server.url, api_request(sandbox), api_request(sandbox, close=True))
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert raw.count(b'"ErrorCode":0') == 2
    assert raw.count(b"Connection: close\r\n") == 1


def test_server_answers_expect_100_continue(sandbox: Sandbox) -> None:
    """A request announcing Expect: 100-continue gets the interim answer before its body."""
    head, _, body = api_request(sandbox, expect=True, close=True).partition(b"\r\n\r\n")
    with serve_in_thread(sandbox) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(head + b"\r\n\r\n")
            interim = sock.recv(1024)
            sock.sendall(body)
            rest = b"".join(iter(lambda: sock.recv(65536), b""))
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"ErrorCode":0' in rest


def test_server_rejects_a_malformed_request(sandbox: Sandbox) -> None:
    """A request line that is not HTTP, or a bad Content-Length, answers 400 and closes."""
    with serve_in_thread(sandbox) as server:
        garbage = raw_exchange(server.url, b"hello there\r\n\r\n")
        length = raw_exchange(server.url, b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert length.startswith(b"HTTP/1.1 400 ")


def test_server_latency_holds_up_no_other_connection(graph: Graph) -> None:
    """While one connection waits out the sandbox's latency, another is answered at once."""
    slow = Sandbox(graph, SandboxConfig(latency_ms=800), clock=FakeClock())
    with serve_in_thread(slow) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with (
            socket.create_connection((host, int(port)), timeout=5) as waiting,
            httpx.Client(base_url=server.url) as other,
        ):
            waiting.sendall(api_request(slow, close=True))
            started = time.monotonic()
            assert other.get("/sandbox/stats").status_code == 200
            quick = time.monotonic() - started
            answer = b"".join(iter(lambda: waiting.recv(65536), b""))
            slow_wait = time.monotonic() - started
    assert quick < 0.5
    assert slow_wait >= 0.7
    assert b'"ErrorCode":0' in answer
