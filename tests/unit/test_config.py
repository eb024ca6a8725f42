"""Settings from the environment: defaults, validation, and secrets that stay hidden."""

from __future__ import annotations

import pytest

from etl.config import DEFAULT_RATE, Secret, load_settings
from etl.errors import ConfigError

BASE = {"IM_SDKAPPID": "1400000001", "IM_SECRET_KEY": "k3y-value", "IM_REGION": "singapore"}


def test_defaults() -> None:
    """With nothing set, the embedded SQLite file and the documented defaults apply."""
    settings = load_settings({})
    assert settings.database_url.render_as_string() == "sqlite:///follow_etl.db"
    assert settings.admin == "administrator"
    assert settings.rate == DEFAULT_RATE
    assert settings.timeout > 3


def test_region_gives_primary_and_backup_domains() -> None:
    """A region names the documented domain and its backup, over https."""
    api = load_settings(BASE).api()
    assert api.base_urls == (
        "https://adminapisgp.im.qcloud.com",
        "https://adminapisgp.my-imcloud.com",
    )


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("postgresql://postgres@127.0.0.1/analytics", "postgresql+psycopg"),
        ("postgres://postgres@127.0.0.1/analytics", "postgresql+psycopg"),
        ("postgresql+psycopg://postgres@127.0.0.1/a", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_database_urls(raw: str, driver: str) -> None:
    """Plain postgresql:// URLs use psycopg 3."""
    assert load_settings({"DATABASE_URL": raw}).database_url.drivername == driver


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "unsupported database"),
        ({"DATABASE_URL": "::nonsense"}, "not a database URL"),
        ({"IM_SDKAPPID": "14e9"}, "IM_SDKAPPID"),
        ({"IM_REGION": "mars"}, "IM_REGION"),
        ({"IM_BASE_URL": "http://example.com"}, "plain http:// is refused"),
        ({"IM_BASE_URL": "ftp://127.0.0.1"}, r"http\(s\) URL"),
        ({"IM_RATE": "0"}, "IM_RATE"),
        ({"IM_RATE": "fast"}, "IM_RATE"),
        ({"IM_TIMEOUT": "1"}, "IM_TIMEOUT"),
    ],
)
def test_invalid_values_are_config_errors(env: dict[str, str], message: str) -> None:
    """Each invalid setting is refused with a message naming it."""
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"])
def test_plain_http_allowed_on_loopback(url: str) -> None:
    """The sandbox on loopback may use http://."""
    assert load_settings({"IM_BASE_URL": url}).base_url == url


@pytest.mark.parametrize(
    ("missing", "message"),
    [("IM_SDKAPPID", "IM_SDKAPPID"), ("IM_SECRET_KEY", "IM_USERSIG"), ("IM_REGION", "IM_REGION")],
)
def test_api_settings_name_what_is_missing(missing: str, message: str) -> None:
    """Calling the API without a required setting says which one."""
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=message):
        load_settings(env).api()


def test_secrets_hidden_from_repr() -> None:
    """Neither the settings nor the secret show the key in repr or str."""
    settings = load_settings({**BASE, "IM_USERSIG": "sig-value"})
    for text in (repr(settings), str(settings), repr(settings.api()), str(Secret("k3y-value"))):
        assert "k3y-value" not in text
        assert "sig-value" not in text
    assert settings.secret_key is not None
    assert settings.secret_key.reveal() == "k3y-value"
