"""The sandbox's call-rate limit answers 60007 as Tencent's does."""

from __future__ import annotations

from etl.sandbox import Graph, Sandbox, SandboxConfig
from tests.unit.sandbox_helpers import FakeClock, call


def test_rate_limit_answers_60007_within_a_second(graph: Graph) -> None:
    """Past `rate` accepted calls in one second answers 60007; rejected calls do not count."""
    clock = FakeClock()
    sandbox = Sandbox(graph, SandboxConfig(rate=3), clock=clock)
    body = {"From_Account": "user_000001", "FollowType": 2}
    codes = []
    for _ in range(5):
        codes.append(call(sandbox, body)["ErrorCode"])
        clock.now += 0.1
    assert codes == [0, 0, 0, 60007, 60007]
    clock.now += 0.6  # the first accepted call is now just over a second old
    assert call(sandbox, body)["ErrorCode"] == 0
    assert sandbox.max_calls_in_window(1.0) == 5
    assert sandbox.max_calls_in_window(1.0, accepted_only=True) == 3
