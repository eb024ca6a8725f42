"""The sandbox's auth checks: URL parameters, SDKAppID, UserSig and administrator, as Tencent's."""

from __future__ import annotations

import json

import pytest

from etl.sandbox import Graph, Sandbox, SandboxConfig
from etl.tencent import usersig
from tests.unit.sandbox_helpers import CONFIG, NOW, FakeClock, call, query


def test_wrong_sdkappid_answers_60005(sandbox: Sandbox) -> None:
    """An SDKAppID other than the app's answers 60005."""
    params = query(sdkappid="1400000002")
    assert (
        call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, params)["ErrorCode"]
        == 60005
    )


@pytest.mark.parametrize("bad", ["-1", "4294967296", "x", ""])
def test_bad_random_answers_60009_without_echoing_usersig(sandbox: Sandbox, bad: str) -> None:
    """A random outside 0..4294967295 answers 60009, naming the parameter, not the UserSig."""
    params = query(random=bad)
    answer = call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, params)
    assert answer["ErrorCode"] == 60009
    assert "random" in answer["ErrorInfo"]
    assert params["usersig"] not in json.dumps(answer)


def test_missing_parameter_answers_60009(sandbox: Sandbox) -> None:
    """A URL without contenttype answers 60009."""
    params = query()
    del params["contenttype"]
    assert call(sandbox, {}, params)["ErrorCode"] == 60009


def test_usersig_with_wrong_secret_answers_70009(sandbox: Sandbox) -> None:
    """A UserSig signed with another secret key answers 70009."""
    sig = usersig.generate(CONFIG.sdkappid, CONFIG.admin, "another-secret", now=NOW)
    answer = call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, query(usersig=sig))
    assert answer["ErrorCode"] == 70009


def test_expired_usersig_answers_70001(sandbox: Sandbox) -> None:
    """A UserSig past its expiry answers 70001."""
    sig = usersig.generate(
        CONFIG.sdkappid, CONFIG.admin, CONFIG.secret_key, now=NOW - 100, expire=50
    )
    answer = call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, query(usersig=sig))
    assert answer["ErrorCode"] == 70001


def test_non_admin_identifier_answers_30004(sandbox: Sandbox) -> None:
    """A valid UserSig for an ordinary user answers 30004."""
    sig = usersig.generate(CONFIG.sdkappid, "alice", CONFIG.secret_key, now=NOW)
    params = query(identifier="alice", usersig=sig)
    assert (
        call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, params)["ErrorCode"]
        == 30004
    )


def test_usersig_verified_once_still_expires(graph: Graph) -> None:
    """A UserSig accepted earlier answers 70001 once its expiry has passed."""
    clock = FakeClock()
    sandbox = Sandbox(graph, CONFIG, clock=clock)
    sig = usersig.generate(CONFIG.sdkappid, CONFIG.admin, CONFIG.secret_key, now=NOW, expire=60)
    body = {"From_Account": "user_000001", "FollowType": 2}
    assert call(sandbox, body, query(usersig=sig))["ErrorCode"] == 0
    clock.now += 61
    assert call(sandbox, body, query(usersig=sig))["ErrorCode"] == 70001


def test_verified_usersig_is_not_accepted_for_another_identifier(graph: Graph) -> None:
    """A UserSig accepted for the administrator answers 70013 when sent for another id."""
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    body = {"From_Account": "user_000001", "FollowType": 2}
    assert call(sandbox, body)["ErrorCode"] == 0
    assert call(sandbox, body, query(identifier="alice"))["ErrorCode"] == 70013


def test_config_repr_hides_secret_key() -> None:
    """The secret key never shows in the config's repr."""
    assert CONFIG.secret_key not in repr(SandboxConfig())
