"""The listener for real: uvicorn on a free port in a thread (``api.listen`` with ``stop`` and
``ready``), a real database. Each refused request gets its status, its metric and a log line,
and writes nothing; an acknowledged callback is in the tables when its 200 arrives;
/healthz and /metrics answer.

The helpers here (signed callbacks, a listener in a thread) serve tests/e2e/test_listen*.py
too."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from etl import api
from etl.config import load_settings
from etl.live.callbacks import ADD, DELETE, STATUSES, sign_for
from etl.live.settings import ListenReport
from etl.sandbox import Graph, SandboxServer
from tests.conftest import run

pytestmark = pytest.mark.slow  # every test here starts a listener (uvicorn in a thread)

APP = 1400000001
TOKEN = "listen-test-token"
STATE_TABLES = ("follow_edges", "follow_edge_events", "live_pairs")


# ---- callbacks as Tencent sends them ------------------------------------------------------


def signed_query(
    command: str, *, app: int = APP, at: float | None = None, token: str = TOKEN
) -> str:
    """The query of a callback, signed with ``token`` at ``at`` (default: now)."""
    stamp = str(int(time.time() if at is None else at))
    return urlencode(
        {
            "SdkAppid": app,
            "CallbackCommand": command,
            "contenttype": "json",
            "ClientIP": "203.0.113.7",
            "OptPlatform": "RESTAPI",
            "RequestTime": stamp,
            "Sign": sign_for(token, stamp),
        }
    )


def follow(account: str, *targets: str, at: int) -> tuple[str, bytes]:
    """A signed FollowAdd: ``account`` follows each target, at ``at`` ms."""
    doc = {
        "CallbackCommand": ADD,
        "From_Account": account,
        "FollowList": [{"To_Account": t} for t in targets],
        "EventTime": at,
    }
    return signed_query(ADD), json.dumps(doc).encode()


def unfollow(account: str, *targets: str, at: int) -> tuple[str, bytes]:
    """A signed FollowDelete: ``account`` unfollows each target, at ``at`` ms."""
    doc: dict[str, Any] = {"CallbackCommand": DELETE, "From_Account": account}
    doc |= {"To_Account": list(targets), "EventTime": at}
    return signed_query(DELETE), json.dumps(doc).encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def listen_env(db_url: URL | str, **extra: str) -> dict[str, str]:
    """The environment a listener of the test app runs with."""
    url = db_url.render_as_string(hide_password=False) if isinstance(db_url, URL) else db_url
    return {"DATABASE_URL": url, "IM_SDKAPPID": str(APP), "IM_CALLBACK_TOKEN": TOKEN, **extra}


@dataclass
class Listener:
    """A listener serving in a thread of this process, and a client of it."""

    url: str
    client: httpx.Client
    stop: threading.Event
    thread: threading.Thread
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """``http://host:port``, without the callback path."""
        return "/".join(self.url.split("/", 3)[:3])

    @property
    def path(self) -> str:
        return self.url[len(self.base) :]

    def post(self, callback: tuple[str, bytes]) -> httpx.Response:
        """POST a callback (query, body)."""
        query, body = callback
        return self.client.post(f"{self.url}?{query}", content=body)

    def metrics(self) -> str:
        return self.client.get(f"{self.base}/metrics").text


@contextmanager
def listening(
    db_url: URL, start: Callable[..., ListenReport] = api.listen, **options: Any
) -> Iterator[Listener]:
    """``api.listen`` on a free loopback port in a thread until the block ends; the block
    gets the listener once ``ready`` said its URL."""
    ready = threading.Event()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def on_ready(url: str) -> None:
        outcome["url"] = url
        ready.set()

    def serve() -> None:
        try:
            outcome["report"] = start(
                port=0,
                settings=load_settings(listen_env(db_url)),
                stop=stop,
                ready=on_ready,
                **options,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            outcome["error"] = exc
            ready.set()

    thread = threading.Thread(target=serve, name="listener-under-test")
    thread.start()
    assert ready.wait(20), "the listener did not start within 20 s"
    if "error" in outcome:
        thread.join()
        raise outcome["error"]
    with httpx.Client(timeout=20) as client:
        listener = Listener(outcome["url"], client, stop, thread, outcome)
        try:
            yield listener
        finally:
            stop.set()
            thread.join(15)
    assert not thread.is_alive(), "the listener did not stop within 15 s of its stop"
    assert "error" not in outcome, outcome.get("error")


def counts(engine: sa.Engine) -> dict[str, int]:
    """Rows of the tables a callback writes."""
    with engine.connect() as conn:
        return {
            table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in STATE_TABLES
        }


def current(engine: sa.Engine, *accounts: str) -> set[tuple[str, int, str]]:
    """The current edges of ``accounts``' lists."""
    marks = ", ".join(f":a{n}" for n in range(len(accounts)))
    params = {f"a{n}": a for n, a in enumerate(accounts)}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, to_account FROM follow_edges "
                f"WHERE removed_at IS NULL AND account IN ({marks})"
            ),
            params,
        )
        return {(a, int(t), b) for a, t, b in rows}


# ---- refused ------------------------------------------------------------------------------


BODY = follow("A", "B", at=1)[1]
BIG = follow("A", *(f"user{i}" for i in range(100)), at=1)[1]  # over 2,000 bytes


def _chunks(body: bytes) -> Iterator[bytes]:
    """The body sent chunked: no Content-Length."""
    for start in range(0, len(body), 1000):
        yield body[start : start + 1000]


def signed(command: str, **options: Any) -> Callable[[], str]:
    """A query signed when the request is sent (a RequestTime made at import would be a
    replay in a long test run)."""
    return lambda: signed_query(command, **options)


def replayed() -> str:
    return signed_query(ADD, at=time.time() - 120)


def unsigned(query: str) -> Callable[[], str]:
    return lambda: query


# reason, method, path ("" for the callback path), query, body
REFUSED: list[tuple[str, str, str, Callable[[], str], Any]] = [
    ("path", "POST", "/other", signed(ADD), BODY),
    ("method", "GET", "", signed(ADD), b""),
    ("method", "POST", "/healthz", unsigned(""), b""),
    ("wrong_app", "POST", "", signed(ADD, app=APP + 1), BODY),
    ("bad_signature", "POST", "", signed(ADD, token="not the token"), BODY),
    ("replay", "POST", "", replayed, BODY),
    ("unknown_command", "POST", "", signed("C2C.CallbackAfterSendMsg"), BODY),
    ("unknown_command", "POST", "", signed(DELETE), BODY),
    ("oversized", "POST", "", signed(ADD), BIG),
    ("oversized", "POST", "", signed(ADD), _chunks),
    ("malformed", "POST", "", signed(ADD), b'{"From_Account": "A", '),
    ("malformed", "POST", "", signed(ADD), b'{"EventTime": NaN}'),
    ("wrong_types", "POST", "", signed(ADD), BODY.replace(b"1}", b'"1"}')),
    ("unstorable", "POST", "", signed(ADD), follow("A\x00", "B", at=1)[1]),
    ("unstorable", "POST", "", signed(DELETE), unfollow("A", "\ud800", at=1)[1]),
]


def send(
    listener: Listener, method: str, path: str, query: Callable[[], str], body: Any
) -> httpx.Response:
    """One request; a callable body is sent chunked (it is made at send time)."""
    target = f"{listener.base}{path or listener.path}?{query()}"
    content = body(BIG) if callable(body) else body
    return listener.client.request(method, target, content=content)


def test_each_refused_request_has_its_status_metric_and_log_line_and_writes_nothing(
    engine: sa.Engine, db_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    """Every rejection reason: its 4xx, +1 on its counter, one warning naming the reason and
    the peer (never the token), and no row in any table a callback writes."""
    before = counts(engine)
    with listening(db_url, max_body=2000) as listener, caplog.at_level(logging.WARNING):
        for reason, *request in REFUSED:
            seen = metric(listener.metrics(), "follow_etl_callbacks_rejected_total", reason=reason)
            caplog.clear()
            answer = send(listener, *request)
            assert answer.status_code == STATUSES[reason], (reason, answer.text)
            assert answer.json()["ActionStatus"] == "FAIL"
            after = metric(listener.metrics(), "follow_etl_callbacks_rejected_total", reason=reason)
            assert after == seen + 1, reason
            lines = [r for r in caplog.records if getattr(r, "event", None) == "callback_rejected"]
            assert len(lines) == 1, (reason, caplog.records)
            assert lines[0].__dict__["reason"] == reason
            assert lines[0].__dict__["remote"].startswith("127.0.0.1:")
            assert TOKEN not in caplog.text
        healthy = listener.client.get(f"{listener.base}/healthz")
    assert healthy.status_code == 200  # none of it hurt the listener
    assert counts(engine) == before


def test_healthz_and_metrics_answer(engine: sa.Engine, db_url: URL) -> None:
    """GET /healthz is 200 {"status": "ok"} while the database works; GET /metrics is the
    Prometheus text of the listener's own metrics."""
    with listening(db_url) as listener:
        health = listener.client.get(f"{listener.base}/healthz")
        text = listener.metrics()
        head = listener.client.head(f"{listener.base}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert head.status_code == 200
    for name in (
        "follow_etl_callbacks_received_total",
        "follow_etl_callbacks_rejected_total",
        "follow_etl_live_changes_total",
        "follow_etl_live_batch_commit_seconds_bucket",
        "follow_etl_live_ack_seconds_count",
        "follow_etl_live_queue_depth",
    ):
        assert name in text, name


def test_an_empty_callback_is_acknowledged_without_a_write(engine: sa.Engine, db_url: URL) -> None:
    """A callback with no To_Account is answered OK and stores nothing."""
    with listening(db_url) as listener:
        answer = listener.post(follow("A", at=now_ms()))
    assert answer.json() == {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
    assert counts(engine)["live_pairs"] == 0


# ---- acknowledged -------------------------------------------------------------------------


def strangers(graph: Graph) -> tuple[str, str]:
    """Two accounts of ``graph`` neither of which follows the other."""
    truth = graph.truth(graph.accounts, (2,))
    for a in graph.accounts:
        for b in graph.accounts:
            follows_ab = b in truth.get((a, 2), {})
            follows_ba = a in truth.get((b, 2), {})
            if a != b and not follows_ab and not follows_ba:
                return a, b
    raise AssertionError("no two strangers in the graph")


def test_an_acknowledged_callback_is_in_the_tables_when_its_200_arrives(
    engine: sa.Engine, db_url: URL, running_sandbox: Callable[..., SandboxServer]
) -> None:
    """On kept lists (a sync crawled them): a follow is A's follows and B's fans as soon as the
    200 arrives, the follow back makes both mutual, the unfollow ends A->B's three edges; each
    change one callback event."""
    graph = Graph(users=12, seed=5)
    run(engine, running_sandbox(graph), graph.accounts)
    a, b = strangers(graph)
    at = now_ms()
    with listening(db_url) as listener:
        assert listener.post(follow(a, b, at=at)).status_code == 200
        assert {(a, 2, b), (b, 1, a)} <= current(engine, a, b)
        assert listener.post(follow(b, a, at=at + 1)).status_code == 200
        assert {(a, 3, b), (b, 3, a), (b, 2, a), (a, 1, b)} <= current(engine, a, b)
        assert listener.post(unfollow(a, b, at=at + 2)).status_code == 200
        now = current(engine, a, b)
        assert not {(a, 2, b), (b, 1, a), (a, 3, b), (b, 3, a)} & now
        assert {(b, 2, a), (a, 1, b)} <= now
        text = listener.metrics()
    with engine.connect() as conn:
        events = conn.execute(
            sa.text("SELECT count(*) FROM follow_edge_events WHERE source = 'callback'")
        ).scalar_one()
    assert events == 2 + 4 + 4  # follow: 2 added; back: 2 + 2 mutual; unfollow: 4 removed
    assert metric(text, "follow_etl_callbacks_acknowledged_total") == 3
    assert metric(text, "follow_etl_live_changes_total", outcome="applied") == 3


def test_a_database_that_does_not_commit_in_time_gets_503_never_200(
    engine: sa.Engine, db_url: URL
) -> None:
    """While another transaction holds the rows a callback needs, the callback is answered
    503 after the ack timeout, not 200; once the lock goes it is applied anyway."""
    at = now_ms()
    with listening(db_url, ack_timeout=0.5) as listener:
        assert listener.post(follow("A", "B", at=at)).status_code == 200  # the pair exists
        with engine.connect() as holder:
            holder.execute(sa.text("UPDATE live_pairs SET updated_at = updated_at"))
            started = time.monotonic()
            answer = listener.post(unfollow("A", "B", at=at + 1))
            waited = time.monotonic() - started
            holder.rollback()
        assert answer.status_code == 503, answer.text
        assert 0.4 < waited < 5
        text = listener.metrics()
        deadline = time.monotonic() + 10
        while metric(listener.metrics(), "follow_etl_live_batches_total") < 2:
            assert time.monotonic() < deadline, "the held batch never committed"
            time.sleep(0.05)
    assert metric(text, "follow_etl_callbacks_unacknowledged_total", why="timeout") == 1
    with engine.connect() as conn:
        low_follows = conn.execute(sa.text("SELECT low_follows FROM live_pairs")).scalar_one()
    assert not low_follows
