"""The numeric options of a sync at their edges: --rate takes any positive rate (below 1/s
too), --concurrency is bounded, each refused with one line and exit 2 (UsageError in etl.api,
ConfigError for IM_RATE), and a stored run's concurrency is kept within the bound."""

from __future__ import annotations

import logging

import pytest

from etl import api
from etl.cli import build_parser
from etl.config import load_settings
from etl.errors import ConfigError, UsageError
from etl.results import MAX_CONCURRENCY, SyncRequest
from etl.sync import stored_concurrency

NOT_RATES = ["0", "-1", "nan", "inf", "-inf", "1e-400", "fast", ""]


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The usage error argparse prints for ``argv`` (asserting exit 2)."""
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("rate", ["0.2", "0.001", "1e-6", "150", "1e9"])
def test_any_positive_rate_is_taken(rate: str) -> None:
    """--rate and IM_RATE accept any positive finite rate, a fifth of a call per second too."""
    assert build_parser().parse_args(["sync", "--account", "a", "--rate", rate]).rate == float(rate)
    assert load_settings({"IM_RATE": rate}).rate == float(rate)


@pytest.mark.parametrize("rate", NOT_RATES)
def test_a_rate_that_is_not_positive_is_a_usage_error(
    rate: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rate 0, negative, nan, inf or too small to have an interval: exit 2, one line."""
    err = parse_error(["sync", "--account", "a", "--rate", rate], capsys)
    assert "--rate" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("rate", [r for r in NOT_RATES if r])
def test_im_rate_that_is_not_positive_is_a_config_error(rate: str) -> None:
    """IM_RATE 0, negative, nan, inf: ConfigError naming IM_RATE."""
    with pytest.raises(ConfigError, match="IM_RATE"):
        load_settings({"IM_RATE": rate})


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan"), float("inf")])
def test_api_refuses_a_rate_that_is_not_positive(rate: float) -> None:
    """etl.api.sync(rate=...) refuses 0, negative, nan and inf before anything is opened."""
    with pytest.raises(UsageError, match="rate"):
        api.sync(["a"], rate=rate, env={})


@pytest.mark.parametrize("concurrency", ["1", "16", str(MAX_CONCURRENCY)])
def test_concurrency_within_the_bound_is_taken(concurrency: str) -> None:
    """--concurrency 1..MAX_CONCURRENCY is accepted as given."""
    args = build_parser().parse_args(["sync", "--account", "a", "--concurrency", concurrency])
    assert args.concurrency == int(concurrency)


@pytest.mark.parametrize("concurrency", ["0", "-3", str(MAX_CONCURRENCY + 1), "100000", "²", "x"])
def test_concurrency_past_the_bound_is_a_usage_error(
    concurrency: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--concurrency outside 1..MAX_CONCURRENCY: exit 2 with one line naming the bound."""
    err = parse_error(["sync", "--account", "a", "--concurrency", concurrency], capsys)
    assert f"1 to {MAX_CONCURRENCY}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("concurrency", [0, MAX_CONCURRENCY + 1, 100_000])
def test_api_and_sync_request_refuse_concurrency_past_the_bound(concurrency: int) -> None:
    """etl.api.sync and SyncRequest raise UsageError for a concurrency out of the bound."""
    with pytest.raises(UsageError, match=f"1..{MAX_CONCURRENCY}"):
        api.sync(["a"], concurrency=concurrency, env={})
    with pytest.raises(UsageError, match=f"1..{MAX_CONCURRENCY}"):
        SyncRequest(job="j", accounts=["a"], concurrency=concurrency)


def test_a_stored_concurrency_past_the_bound_is_capped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker reading a run stored with concurrency 100000 crawls with MAX_CONCURRENCY."""
    with caplog.at_level(logging.WARNING, logger="etl.sync"):
        assert stored_concurrency({"concurrency": 100_000}) == MAX_CONCURRENCY
    assert "100000" in caplog.text
    assert stored_concurrency({"concurrency": 0}) == 1
    assert stored_concurrency({"concurrency": 8}) == 8
    assert stored_concurrency({}) == 16
