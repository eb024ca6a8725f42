"""The ``sandbox`` command's flags reach the sandbox's config, and bad ones are usage errors."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from etl.cli import build_parser
from etl.cli.commands import _sandbox_config
from etl.config import Secret
from etl.sandbox.faults import DEFAULT_FAULT_KINDS


def sandbox_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["sandbox", *flags])


def test_sandbox_flags_reach_the_config() -> None:
    """--fault-kinds, --loop-account and --hostile are parsed and wired into the config."""
    args = sandbox_args(
        "--faults", "0.1", "--fault-kinds", "malformed, 30006", "--hostile", "0.05",
        "--loop-account", "user_000001", "--loop-account", "user_000002",
    )  # fmt: skip
    settings = SimpleNamespace(sdkappid=None, secret_key=None, admin="administrator")
    config = _sandbox_config(settings, args)  # type: ignore[arg-type]
    assert config.fault_kinds == ("malformed", "30006")
    assert config.loop_accounts == ("user_000001", "user_000002")
    assert args.hostile == 0.05
    assert _sandbox_config(settings, sandbox_args()).fault_kinds == DEFAULT_FAULT_KINDS  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "flags", [("--fault-kinds", "30006,bogus"), ("--fault-kinds", ","), ("--hostile", "2")]
)
def test_bad_sandbox_flags_are_usage_errors(
    flags: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown fault kind or a hostile share past 1 is exit 2 with the choices named."""
    with pytest.raises(SystemExit) as caught:
        sandbox_args(*flags)
    assert caught.value.code == 2
    assert f"argument {flags[0]}:" in capsys.readouterr().err


def test_webhook_flags_reach_the_config() -> None:
    """--webhook-url and its faults make the sandbox's webhook config, signed with
    IM_CALLBACK_TOKEN; without a URL there is none."""
    token = Secret("from-the-environment")
    settings = SimpleNamespace(
        sdkappid=None, secret_key=None, admin="administrator", callback_token=token
    )
    args = sandbox_args(
        "--seed", "5", "--webhook-url", "http://127.0.0.1:9000/cb", "--webhook-drops", "0.1",
        "--webhook-duplicates", "0.2", "--webhook-reorder", "8", "--webhook-delay-ms", "10-50",
    )  # fmt: skip
    hook = _sandbox_config(settings, args).webhook  # type: ignore[arg-type]
    assert (hook.url, hook.drops, hook.duplicates, hook.reorder) == (
        "http://127.0.0.1:9000/cb",
        0.1,
        0.2,
        8,
    )
    assert (hook.delay_ms, hook.seed, hook.token) == ((10.0, 50.0), 5, token)
    quiet = _sandbox_config(settings, sandbox_args("--webhook-drops", "0.5"))  # type: ignore[arg-type]
    assert quiet.webhook.url is None
    assert sandbox_args("--webhook-delay-ms", "30").webhook_delay_ms == (0.0, 30.0)


@pytest.mark.parametrize(
    "flags",
    [
        ("--webhook-drops", "1.5"),
        ("--webhook-delay-ms", "50-10"),
        ("--webhook-delay-ms", "soon"),
        ("--webhook-reorder", "-1"),
    ],
)
def test_bad_webhook_flags_are_usage_errors(
    flags: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """A share past 1, a backwards or unreadable delay range, a negative window: exit 2."""
    with pytest.raises(SystemExit) as caught:
        sandbox_args(*flags)
    assert caught.value.code == 2
    assert f"argument {flags[0]}:" in capsys.readouterr().err
