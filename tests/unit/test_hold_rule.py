"""The mass-removal rule (etl.holds) and its thresholds: the rule against a reference in exact
arithmetic, the tolerance of follow_get_info's count, and validation at every door (the
environment, the library, the command line)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl import api
from etl.cli import build_parser
from etl.config import load_settings
from etl.errors import ConfigError, UsageError
from etl.holds import (
    DEFAULT_MIN_EDGES,
    DEFAULT_SHARE,
    LAST_PAGE,
    MISSING,
    Hold,
    Thresholds,
    agrees,
    decide,
    decide_missing,
)

shares = st.one_of(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), st.floats(0, 1, allow_nan=False))


@given(
    min_edges=st.integers(1, 60),
    share=shares,
    current=st.integers(0, 200),
    data=st.data(),
)
def test_the_rule_matches_its_definition(
    min_edges: int, share: float, current: int, data: st.DataObject
) -> None:
    """R of S is a mass removal exactly when R >= min and R > share x S (no float rounding),
    around both thresholds."""
    near = [min_edges - 1, min_edges, int(share * current), int(share * current) + 1]
    edges = [r for r in near if 0 <= r <= current] or [0]
    removed = data.draw(st.one_of(st.sampled_from(edges), st.integers(0, current)))
    expected = removed >= min_edges and removed > Fraction(share) * current
    assert Thresholds(min_edges, share).is_mass(removed, current) is expected


def test_the_defaults_hold_from_20_edges_and_more_than_half() -> None:
    """20 of 39 is held, 19 of 19 and 20 of 40 are not."""
    rule = Thresholds()
    assert (rule.min_edges, rule.share) == (DEFAULT_MIN_EDGES, DEFAULT_SHARE) == (20, 0.5)
    assert rule.is_mass(20, 39)
    assert not rule.is_mass(19, 19)
    assert not rule.is_mass(20, 40)


@given(count=st.integers(0, 10**7), off=st.integers(-(10**5), 10**5))
def test_the_count_agrees_within_two_edges_or_one_percent(count: int, off: int) -> None:
    """follow_get_info's count agrees with a crawl's when within max(2, 1%) of the larger."""
    found = max(0, count + off)
    limit = max(2, -(-max(count, found) // 100))  # ceil(1%)
    assert agrees(count, found) is (abs(count - found) <= limit)
    assert not agrees(None, found)


def test_a_confirming_crawl_is_applied_only_if_the_count_agrees() -> None:
    """A second mass removal is applied when the info count matches what the crawl found,
    and held (given up for the run) when it does not; a first one is always held."""
    rule, key = Thresholds(), ("a", 1)
    assert decide(rule, key, 39, 42, confirming=True, count=3) is None
    assert decide(rule, key, 39, 42, confirming=True, count=42) == Hold(
        key, 39, 42, LAST_PAGE, confirming=True, count=42
    )
    assert decide(rule, key, 39, 42, confirming=False, count=None) == Hold(key, 39, 42, LAST_PAGE)
    assert decide(rule, key, 5, 42, confirming=False, count=None) is None


def test_a_30003_is_confirmed_only_by_follow_get_info_saying_missing() -> None:
    """30003 for a list with many edges: held the first time; applied on the second crawl
    only if follow_get_info says the account does not exist; small lists at once."""
    rule, key = Thresholds(), ("a", 1)
    assert decide_missing(rule, key, 19, confirming=False, missing=False, count=None) is None
    held = decide_missing(rule, key, 42, confirming=False, missing=False, count=None)
    assert held == Hold(key, 42, 42, MISSING)
    assert decide_missing(rule, key, 42, confirming=True, missing=True, count=None) is None
    kept = decide_missing(rule, key, 42, confirming=True, missing=False, count=42)
    assert kept is not None
    assert "follow_get_info says 42" in kept.message()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FOLLOW_ETL_HOLD_MIN_EDGES": "0"}, "FOLLOW_ETL_HOLD_MIN_EDGES"),
        ({"FOLLOW_ETL_HOLD_MIN_EDGES": "-3"}, "FOLLOW_ETL_HOLD_MIN_EDGES"),
        ({"FOLLOW_ETL_HOLD_MIN_EDGES": "2.5"}, "FOLLOW_ETL_HOLD_MIN_EDGES"),
        ({"FOLLOW_ETL_HOLD_SHARE": "1.5"}, "FOLLOW_ETL_HOLD_SHARE"),
        ({"FOLLOW_ETL_HOLD_SHARE": "nan"}, "FOLLOW_ETL_HOLD_SHARE"),
        ({"FOLLOW_ETL_HOLD_SHARE": "half"}, "FOLLOW_ETL_HOLD_SHARE"),
    ],
)
def test_the_environment_thresholds_are_validated(env: dict[str, str], message: str) -> None:
    """A bad threshold in the environment is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_the_environment_sets_the_thresholds() -> None:
    """FOLLOW_ETL_HOLD_MIN_EDGES and FOLLOW_ETL_HOLD_SHARE are read once into Settings."""
    settings = load_settings({"FOLLOW_ETL_HOLD_MIN_EDGES": "100", "FOLLOW_ETL_HOLD_SHARE": "0.9"})
    assert settings.holds == Thresholds(100, 0.9)
    assert load_settings({}).holds == Thresholds()


@pytest.mark.parametrize("bad", [{"hold_min_edges": 0}, {"hold_share": 1.01}, {"hold_share": -0.1}])
def test_the_library_validates_the_thresholds(bad: dict[str, float]) -> None:
    """etl.api.sync refuses bad thresholds with a UsageError before anything else."""
    with pytest.raises(UsageError, match="hold"):
        api.sync(["a"], env={}, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args", [["--hold-min-edges", "0"], ["--hold-share", "2"], ["--hold-share", "x"]]
)
def test_the_command_line_validates_the_thresholds(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`sync --hold-min-edges/--hold-share` refuse bad values as usage errors (exit 2)."""
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["sync", "--account", "a", *args])
    assert caught.value.code == 2
    assert "--hold-" in capsys.readouterr().err


def test_thresholds_refuse_bad_values() -> None:
    """The Thresholds object itself cannot hold a bad rule."""
    with pytest.raises(ValueError, match="minimum"):
        Thresholds(0, 0.5)
    with pytest.raises(ValueError, match="share"):
        Thresholds(20, 2.0)
