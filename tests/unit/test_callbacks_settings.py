"""A listener's settings: IM_CALLBACK_TOKEN read and hidden, required off loopback; the
options checked into one clear line."""

from __future__ import annotations

import argparse

import pytest

from etl.cli import values
from etl.config import load_settings
from etl.console import REDACTOR
from etl.errors import ConfigError, UsageError
from etl.live.settings import listen_settings
from etl.session import settings_from

APP = {"IM_SDKAPPID": "1400000001"}


def test_the_token_is_read_and_never_shown() -> None:
    """IM_CALLBACK_TOKEN is a Secret: its repr hides it, and log records mask it."""
    settings = settings_from({**APP, "IM_CALLBACK_TOKEN": " tok-123456 "})
    try:
        assert settings.callback_token is not None
        assert settings.callback_token.reveal() == "tok-123456"
        assert "tok-123456" not in repr(settings)
        assert REDACTOR.redact("sign with tok-123456") == "sign with ***"
    finally:
        settings_from({})  # the process's redactor back to no secrets


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_a_loopback_listener_needs_no_token(host: str) -> None:
    """Bound to loopback, no token is needed (nothing but this machine can call it)."""
    checked = listen_settings(load_settings(APP), host=host)
    assert checked.token is None
    assert checked.sdkappid == 1400000001


@pytest.mark.parametrize("host", ["0.0.0.0", "", "10.0.0.5", "::", "example.com"])  # noqa: S104
def test_any_other_host_needs_the_token(host: str) -> None:
    """Off loopback, a missing IM_CALLBACK_TOKEN is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="IM_CALLBACK_TOKEN is not set"):
        listen_settings(load_settings(APP), host=host)
    env = {**APP, "IM_CALLBACK_TOKEN": "tok"}
    assert listen_settings(load_settings(env), host=host).token is not None


def test_the_app_is_required() -> None:
    """Without IM_SDKAPPID no callback could pass: ConfigError."""
    with pytest.raises(ConfigError, match="IM_SDKAPPID"):
        listen_settings(load_settings({}))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 70000}, "--port"),
        ({"path": "callback"}, "--path"),
        ({"path": "/a b"}, "--path"),
        ({"path": "/healthz"}, "own route"),
        ({"max_body": 0}, "--max-body"),
        ({"ack_timeout": 0.0}, "--ack-timeout"),
        ({"ack_timeout": float("nan")}, "--ack-timeout"),
    ],
)
def test_options_out_of_range_are_usage_errors(options: dict[str, object], message: str) -> None:
    """Each bad option is one UsageError line naming it."""
    with pytest.raises(UsageError, match=message):
        listen_settings(load_settings(APP), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["-1", "65536", "http", ""])
def test_the_port_option_refuses_what_is_no_port(raw: str) -> None:
    """``--port`` takes 0..65535."""
    with pytest.raises(argparse.ArgumentTypeError):
        values.port(raw)
    assert values.port("0") == 0


@pytest.mark.parametrize("raw", ["hooks", "/a?b", "/a#b", "/a b"])
def test_the_path_option_refuses_what_is_no_path(raw: str) -> None:
    """``--path`` starts with / and holds no space, ? or #."""
    with pytest.raises(argparse.ArgumentTypeError):
        values.url_path(raw)
    assert values.url_path("/im/callback") == "/im/callback"
