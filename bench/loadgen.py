"""The listen case's load: a plan of follow callbacks, and an open-loop HTTP/1.1 client.

The plan (``plan``) is a sequence of callbacks, each one follow or unfollow of one direction
among a few thousand accounts, due at ``i / rate`` seconds: new follows, follow-backs (mutual
pairs) and unfollows of directions followed earlier. Callbacks on one pair of accounts are at
least ``PAIR_SPACING_S`` apart, so that (once each is acknowledged before the next one of its
pair is sent, which the client checks) the tables' end state and the number of their events
follow from the plan alone: ``expected`` computes both.

The client (``drive``) is cheap on purpose, to leave the CPU to the listener and PostgreSQL:
asyncio (uvloop when installed) streams, keep-alive connections, every request's bytes built
before the clock starts (signed with one RequestTime, well inside the 60 s replay window), a
response read as its head plus Content-Length bytes. Open loop: a callback is due at its time
whether or not an earlier one was answered, and its latency is counted from when it was due, so
a listener that falls behind shows it in the latency (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from etl.config import Secret
from etl.sandbox.changes import Callback
from etl.sandbox.webhook import WebhookConfig, query

# Keep-alive connections, all opened before the clock starts. The listener acknowledges a
# callback once its batch committed, so each connection carries one callback per commit
# latency: 512 of them carry 2,100/s up to about 240 ms of latency, past the p99 target.
CONNECTIONS = 512
PAIR_SPACING_S = 1.0  # callbacks on one pair of accounts are at least this far apart
_UNFOLLOW_SHARE = 0.25
_FOLLOW_BACK_SHARE = 0.3
_TRIES = 20  # draws for a step's pair before it settles for a new follow of any free pair


@dataclass(frozen=True, slots=True)
class Step:
    """One planned callback: ``account`` follows (or unfollows) ``to`` at ``at`` s."""

    at: float  # seconds after the start when it is due
    account: int
    to: int
    follows: bool
    previous: int  # index of the step before it on the same pair of accounts; -1: none


def plan(rate: float, seconds: float, accounts: int, seed: int = 1) -> list[Step]:
    """``rate * seconds`` callbacks among ``accounts`` accounts (none followed at the start)."""
    rng = random.Random(f"listen|{seed}")
    followed: set[tuple[int, int]] = set()
    followed_list: list[tuple[int, int]] = []  # draws from it; stale entries are skipped
    last: dict[tuple[int, int], tuple[float, int]] = {}  # pair -> (due, step index)
    steps: list[Step] = []
    for i in range(round(rate * seconds)):
        at = i / rate
        a, b, follows = _pick(rng, followed, followed_list, accounts, _Free(last, at))
        if follows:
            followed.add((a, b))
            followed_list.append((a, b))
        else:
            followed.discard((a, b))
        pair = (min(a, b), max(a, b))
        previous = last.get(pair, (0.0, -1))[1]
        last[pair] = (at, i)
        steps.append(Step(at, a, b, follows, previous))
    return steps


@dataclass(frozen=True)
class _Free:
    """Whether a pair of accounts may have a callback due at ``at``: none for a while."""

    last: dict[tuple[int, int], tuple[float, int]]
    at: float

    def __call__(self, a: int, b: int) -> bool:
        touched = self.last.get((min(a, b), max(a, b)))
        return touched is None or self.at - touched[0] >= PAIR_SPACING_S


def _pick(
    rng: random.Random,
    followed: set[tuple[int, int]],
    followed_list: list[tuple[int, int]],
    accounts: int,
    free: _Free,
) -> tuple[int, int, bool]:
    """(account, to, follows) of the next step: an unfollow, a follow-back or a new follow."""
    roll = rng.random()
    tries = _TRIES if followed_list and roll < _UNFOLLOW_SHARE + _FOLLOW_BACK_SHARE else 0
    for _ in range(tries):
        a, b = followed_list[rng.randrange(len(followed_list))]
        if (a, b) not in followed or not free(a, b):
            continue
        if roll < _UNFOLLOW_SHARE:
            return a, b, False
        if (b, a) not in followed:
            return b, a, True
    while True:
        a, b = rng.randrange(accounts), rng.randrange(accounts)
        if a != b and (a, b) not in followed and free(a, b):
            return a, b, True


@dataclass(frozen=True)
class Expected:
    """What the tables hold once every callback of a plan is applied in order."""

    events: int  # follow_edge_events rows (source callback)
    edges: int  # current edges, every type
    mutual_pairs: int


def expected(steps: Sequence[Step]) -> Expected:
    """The events and end state of ``steps`` applied one after the other (every list kept)."""
    followed: set[tuple[int, int]] = set()
    events = 0
    for step in steps:
        a, b = step.account, step.to
        mutual = (b, a) in followed
        events += 4 if mutual else 2  # (a,2,b), (b,1,a), and when mutual (a,3,b), (b,3,a)
        if step.follows:
            followed.add((a, b))
        else:
            followed.discard((a, b))
    mutual_pairs = sum(1 for a, b in followed if a < b and (b, a) in followed)
    return Expected(events, 2 * len(followed) + 2 * mutual_pairs, mutual_pairs)


def account_id(i: int) -> str:
    """The account id of index ``i``."""
    return f"bench_{i:06d}"


def requests(
    steps: Sequence[Step],
    *,
    host: str,
    port: int,
    path: str,
    sdkappid: int,
    token: Secret | None,
    event_ms: int,
) -> list[bytes]:
    """Each step's whole HTTP request, signed now; EventTime ``event_ms`` + its due time."""
    now = int(time.time())
    config = WebhookConfig(url="http://unused/", token=token)
    heads = {}
    for command in ("Follow.CallbackAfterFollowAdd", "Follow.CallbackAfterFollowDelete"):
        target = f"{path}?{urllib.parse.urlencode(query(sdkappid, command, config, now))}"
        heads[command] = (
            f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
    built = []
    for i, step in enumerate(steps):
        at_ms = event_ms + int(step.at * 1000)
        callback = Callback(
            i + 1, account_id(step.account), (account_id(step.to),), step.follows, at_ms
        )
        body = callback.body()
        built.append(heads[callback.command] + b"%d\r\n\r\n" % len(body) + body)
    return built


@dataclass
class Outcome:
    """What the client saw: per callback, when it went out, when its answer came, the status."""

    due: list[float]  # seconds after the start
    sent: list[float] = field(default_factory=list)  # -1: never sent
    acked: list[float] = field(default_factory=list)  # -1: no 200 answer
    status: list[int] = field(default_factory=list)  # HTTP status; 0: none (a failed exchange)
    overlaps: int = 0  # sent before the previous callback of its pair was acknowledged

    def __post_init__(self) -> None:
        n = len(self.due)
        self.sent, self.acked, self.status = [-1.0] * n, [-1.0] * n, [0] * n


def drive(
    host: str,
    port: int,
    payloads: list[bytes],
    steps: Sequence[Step],
    *,
    connections: int = CONNECTIONS,
    tail_s: float = 30.0,
    marks: Mapping[float, Callable[[], object]] | None = None,
) -> Outcome:
    """Send every payload at its step's due time over ``connections`` keep-alive connections;
    wait up to ``tail_s`` after the last is due for the answers. ``marks``: functions to call
    (in a thread) that many seconds after the start, e.g. to read CPU counters."""
    outcome = Outcome([step.at for step in steps])
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_drive(host, port, payloads, steps, connections, tail_s, outcome, marks or {}))
    return outcome


async def _drive(
    host: str,
    port: int,
    payloads: list[bytes],
    steps: Sequence[Step],
    connections: int,
    tail_s: float,
    outcome: Outcome,
    marks: Mapping[float, Callable[[], object]],
) -> None:
    todo: asyncio.Queue[int] = asyncio.Queue()
    clock = time.perf_counter  # uvloop's loop.time() counts whole milliseconds
    streams = await asyncio.gather(*(_open(host, port) for _ in range(connections)))
    start = clock() + 0.2
    workers = [
        asyncio.create_task(_connection(s, host, port, payloads, steps, todo, start, outcome))
        for s in streams
    ]
    marked = [asyncio.create_task(_mark(start + at, call)) for at, call in marks.items()]
    for i, step in enumerate(steps):
        wait = start + step.at - clock()
        if wait > 0.0005:
            await asyncio.sleep(wait)
        todo.put_nowait(i)
    for _ in workers:
        todo.put_nowait(-1)
    _, late = await asyncio.wait(workers, timeout=steps[-1].at + tail_s - (clock() - start))
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    await asyncio.gather(*marked)


async def _mark(at: float, call: Callable[[], object]) -> None:
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    await asyncio.get_running_loop().run_in_executor(None, call)


async def _connection(
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    host: str,
    port: int,
    payloads: list[bytes],
    steps: Sequence[Step],
    todo: asyncio.Queue[int],
    start: float,
    outcome: Outcome,
) -> None:
    """One keep-alive connection: take a due callback, send it, read its answer; again."""
    clock = time.perf_counter
    try:
        while (i := await todo.get()) >= 0:
            previous = steps[i].previous
            if previous >= 0 and outcome.acked[previous] < 0:
                outcome.overlaps += 1
            try:
                if stream is None:
                    stream = await _open(host, port)
                reader, writer = stream
                outcome.sent[i] = clock() - start
                writer.write(payloads[i])
                status, close = await _answer(reader)
            except (OSError, EOFError, ValueError, IndexError, asyncio.LimitOverrunError):
                _close(stream)
                stream = None
                continue
            outcome.status[i] = status
            if status == 200:
                outcome.acked[i] = clock() - start
            if close:
                _close(stream)
                stream = None
    finally:
        _close(stream)


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, the server closes the connection) of one response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if length:
        await reader.readexactly(length)
    return status, close


def _close(stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    """Close the connection, if there is one (the next callback opens another)."""
    if stream is not None:
        stream[1].close()
