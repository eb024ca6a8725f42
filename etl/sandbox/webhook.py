"""The sandbox's webhook: its graph's changes posted to a URL as Tencent's follow callbacks.

``Webhook`` takes the callbacks ``Announcer`` makes of each change of the graph
(etl.sandbox.changes) and posts them to ``WebhookConfig.url`` from one background thread
(started by the first callback, joined by ``close``), through a bounded queue: a full queue
makes the graph's change wait, so nothing is lost to an overflow. A request is what Chat sends::

    POST {url}?SdkAppid=..&CallbackCommand=..&contenttype=json&ClientIP=..&OptPlatform=..
               [&RequestTime={Unix s}&Sign={hex sha256(token + RequestTime)}]   (with a token)
    Content-Type: application/json                       (the body: ``Callback.body``)

A callback is delivered when the receiver answers 200. Any other answer, or none within
``timeout``, fails it; Chat documents no redelivery, and the sandbox does not retry either.
Posts go one at a time, over one keep-alive connection; this is a test server on loopback.

Faults, each off by default and drawn from ``seed`` (drops and duplicates in the order the
graph changed, so the same changes meet the same fate run after run):

- ``drops``: the share of callbacks never sent;
- ``duplicates``: the share sent twice (each copy takes its own place and delay);
- ``reorder``: callbacks are held back until ``reorder`` of them wait (or none came for
  ``HOLD_S``), then sent in a shuffled order;
- ``delay_ms`` (lo, hi): each post waits a time drawn from this range first.

``report`` says what became of the callbacks: counts, and the changes of those dropped or
failed (what the receiver never heard of: what the next crawl must find).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import heapq
import itertools
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from etl.config import Secret
from etl.sandbox.changes import Callback

HOLD_S = 0.1  # a part-filled reorder window goes out when no callback came for this long
_KEPT = 100_000  # callbacks whose record ``report(events=True)`` lists (the latest)
_CLOSE_S = 5.0  # how long ``close`` lets the posts in flight finish


@dataclass(frozen=True)
class WebhookConfig:
    """Where the sandbox posts its callbacks, signed how, with which faults; no ``url``: none."""

    url: str | None = None
    token: Secret | None = None  # signs each request (RequestTime, Sign); None: unsigned
    client_ip: str = "127.0.0.1"  # ClientIP: the address of the user who followed
    opt_platform: str = "RESTAPI"  # OptPlatform: where the follow was made
    drops: float = 0.0
    duplicates: float = 0.0
    reorder: int = 0  # window; 0 or 1: in order
    delay_ms: tuple[float, float] = (0.0, 0.0)
    seed: int = 0
    queue: int = 10_000  # callbacks waiting to be posted, at most
    timeout: float = 5.0  # seconds for one post

    def __post_init__(self) -> None:
        for name in ("drops", "duplicates"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a share between 0 and 1")
        lo, hi = self.delay_ms
        if not 0.0 <= lo <= hi:
            raise ValueError("delay_ms is a range (lo, hi) with 0 <= lo <= hi")
        if self.reorder < 0 or self.queue < 1 or self.timeout <= 0:
            raise ValueError("reorder >= 0, queue >= 1 and timeout > 0")


@dataclass
class _Record:
    """What became of one callback."""

    callback: Callback
    copies: int  # posts still to make (2 for a duplicated callback)
    outcome: str = "pending"  # delivered, dropped, failed
    answers: list[str] = field(default_factory=list)  # per post: "200", "HTTP 503", an error

    def as_json(self) -> dict[str, object]:
        cb = self.callback
        return {
            "seq": cb.seq,
            "command": cb.command,
            "account": cb.account,
            "to_accounts": list(cb.to_accounts),
            "event_ms": cb.event_ms,
            "outcome": self.outcome,
            "answers": self.answers,
        }


def sign(token: Secret, request_time: str) -> str:
    """Chat's callback signature: hex SHA-256 of token + RequestTime."""
    return hashlib.sha256((token.reveal() + request_time).encode()).hexdigest()


def query(
    sdkappid: int, command: str, config: WebhookConfig, now: int
) -> list[tuple[str, str | int | float | bool | None]]:
    """A callback's query parameters, in Chat's order; signed at Unix second ``now`` when the
    config has a token."""
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("SdkAppid", str(sdkappid)),
        ("CallbackCommand", command),
        ("contenttype", "json"),
        ("ClientIP", config.client_ip),
        ("OptPlatform", config.opt_platform),
    ]
    if config.token is not None:
        params += [("RequestTime", str(now)), ("Sign", sign(config.token, str(now)))]
    return params


class Ledger:
    """What became of each callback: the fate drawn for it, its posts' answers, the counts.
    Thread-safe; ``drain`` waits for the callbacks still to be answered."""

    def __init__(self, config: WebhookConfig) -> None:
        self._config = config
        self._fate = random.Random(f"webhook|{config.seed}|fate")  # drops, duplicates
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._kept: collections.deque[_Record] = collections.deque(maxlen=_KEPT)
        self._lost: list[_Record] = []  # dropped or failed, every one
        self._counts: collections.Counter[str] = collections.Counter()
        self._pending = 0

    def fated(self, callbacks: list[Callback], silent: int, *, closed: bool) -> list[_Record]:
        """The records of the callbacks to post (a duplicated one with two copies to go), the
        dropped ones kept aside; ``silent`` changes were not announced. ``closed``: none is
        posted any more, each fails at once."""
        with self._lock:
            self._counts["silent"] += silent
            records = [self._fated(callback) for callback in callbacks]
            sent = [record for record in records if record.outcome == "pending"]
            if closed:
                for record in sent:
                    record.copies = 0
                    record.answers.append("closed")
                    self._settle(record)
                return []
            return sent

    def _fated(self, callback: Callback) -> _Record:
        dropped = self._fate.random() < self._config.drops
        twice = not dropped and self._fate.random() < self._config.duplicates
        record = _Record(callback, copies=2 if twice else 1)
        self._kept.append(record)
        self._counts["callbacks"] += 1
        self._counts["changes"] += len(callback.to_accounts)
        if dropped:
            record.outcome = "dropped"
            self._counts["dropped"] += 1
            self._lost.append(record)
        else:
            self._counts["duplicated"] += twice
            self._pending += 1
        return record

    def answered(self, record: _Record, status: str) -> None:
        """One post of ``record`` got ``status`` ("200", "HTTP 503", an error's name, or
        "closed": never posted)."""
        with self._lock:
            self._counts["posts"] += status != "closed"
            record.answers.append(status)
            record.copies -= 1
            if status == "200" and record.outcome == "pending":
                record.outcome = "delivered"
                self._counts["delivered"] += 1
            if record.copies == 0:
                self._settle(record)

    def _settle(self, record: _Record) -> None:
        """The last post of a callback is answered (the lock held): failed if none was 200."""
        if record.outcome == "pending":
            record.outcome = "failed"
            self._counts["failed"] += 1
            self._lost.append(record)
        self._pending -= 1
        self._idle.notify_all()

    def report(self, url: str, *, events: bool = False) -> dict[str, object]:
        """Counts, and the changes of the callbacks dropped and failed; with ``events``, every
        callback's record too (the latest 100,000)."""
        names = ("callbacks", "changes", "delivered", "dropped", "failed", "duplicated")
        with self._lock:
            counts = {name: self._counts[name] for name in names}
            counts |= {"pending": self._pending, "posts": self._counts["posts"]}
            counts["silent"] = self._counts["silent"]
            doc: dict[str, object] = {"url": url, "counts": counts}
            for outcome in ("dropped", "failed"):
                lost = (r for r in self._lost if r.outcome == outcome)
                doc[outcome] = [c.as_json() for r in lost for c in r.callback.changes]
            if events:
                doc["events"] = [r.as_json() for r in self._kept]
        return doc

    def drain(self, timeout: float) -> bool:
        """Wait until every callback sent has its answer (or ``timeout`` s); True if so."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


class Webhook:
    """Callbacks posted from a background thread, with the configured faults; ``ledger`` says
    what became of them."""

    def __init__(
        self,
        config: WebhookConfig,
        sdkappid: int,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if config.url is None:
            raise ValueError("a webhook needs a URL")
        self.config = config
        self.ledger = Ledger(config)
        self._url = config.url
        self._sdkappid = sdkappid
        self._clock = clock
        self._transport = transport
        self._order = random.Random(f"webhook|{config.seed}|order")  # shuffles, delays
        self._queue: queue.Queue[_Record | None] = queue.Queue(maxsize=config.queue)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def post(self, callbacks: list[Callback], silent: int = 0) -> None:
        """Queue ``callbacks`` (after drawing which are dropped or duplicated); ``silent``
        changes were not announced. Waits while the queue is full."""
        with self._lock:
            records = self.ledger.fated(callbacks, silent, closed=self._stop.is_set())
            if records and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sandbox-webhook")
                self._thread.daemon = True  # a backstop: the sandbox's close joins it
                self._thread.start()
        for record in records:
            for _ in range(record.copies):
                self._queue.put(record)

    def report(self, *, events: bool = False) -> dict[str, object]:
        """What became of the callbacks (``Ledger.report``)."""
        return self.ledger.report(self._url, events=events)

    def drain(self, timeout: float) -> bool:
        """Wait until every callback sent has its answer (or ``timeout`` s); True if so."""
        return self.ledger.drain(timeout)

    def close(self, timeout: float = _CLOSE_S) -> None:
        """Let the posts in flight finish (up to ``timeout`` s), then stop and join the thread;
        what is still waiting then fails ("closed")."""
        self.drain(timeout)
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            with contextlib.suppress(queue.Full):  # full: it is busy, and sees the stop anyway
                self._queue.put_nowait(None)  # wake it
            thread.join()
        self._abandon([])

    # ---- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        held: list[_Record] = []  # the reorder window
        due: list[tuple[float, int, _Record]] = []  # (when, order, record): the delays
        order = itertools.count()
        last = time.monotonic()
        window = max(1, self.config.reorder)
        with httpx.Client(transport=self._transport, timeout=self.config.timeout) as client:
            while not self._stop.is_set():
                now = time.monotonic()
                waits = [due[0][0] - now] if due else []
                waits += [last + HOLD_S - now] if held else []
                try:
                    record = self._queue.get(timeout=max(0.0, min(waits)) if waits else None)
                except queue.Empty:
                    record = None
                now = time.monotonic()
                if record is not None:
                    held.append(record)
                    last = now
                if held and (len(held) >= window or now - last >= HOLD_S):
                    self._release(held, due, order, now)
                while due and due[0][0] <= now and not self._stop.is_set():
                    self._send(client, heapq.heappop(due)[2])
        self._abandon([*held, *(r for _, _, r in due)])

    def _release(
        self,
        held: list[_Record],
        due: list[tuple[float, int, _Record]],
        order: itertools.count[int],
        now: float,
    ) -> None:
        """The held callbacks, shuffled when reordering, each due after its drawn delay."""
        if self.config.reorder > 1:
            self._order.shuffle(held)
        lo, hi = self.config.delay_ms
        for record in held:
            delay = self._order.uniform(lo, hi) / 1000 if hi else 0.0
            heapq.heappush(due, (now + delay, next(order), record))
        held.clear()

    def _send(self, client: httpx.Client, record: _Record) -> None:
        """One post of the callback; its answer recorded."""
        callback = record.callback
        params = query(self._sdkappid, callback.command, self.config, int(self._clock()))
        headers = {"Content-Type": "application/json"}
        try:
            answer = client.post(self._url, params=params, content=callback.body(), headers=headers)
            code = answer.status_code
            status = "200" if code == 200 else f"HTTP {code}"
        except Exception as exc:  # noqa: BLE001 (any failure to post fails this callback only)
            status = type(exc).__name__
        self.ledger.answered(record, status)

    def _abandon(self, left: list[_Record]) -> None:
        """Records never posted at the stop (held, delayed or still queued) fail as closed."""
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                break
            if record is not None:
                left.append(record)
        for record in left:
            self.ledger.answered(record, "closed")
