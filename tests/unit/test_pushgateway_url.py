"""--pushgateway: basic auth from the URL, the credentials kept apart and never printed."""

from __future__ import annotations

import base64
import socket
import string
import threading
from collections.abc import Callable
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import exposition

from etl import metrics
from etl.cli import build_parser
from etl.config import pushgateway
from etl.pushgateway import authenticated

REFUSED = (
    "not a Pushgateway URL: write it as http(s)://[user:password@]host[:port][/path], "
    "with any @ : / ? # % or space in the user or password percent-encoded (%40 for @)"
)
# Printable characters from the whole of Unicode, with URL punctuation drawn often.
TEXT = st.one_of(
    st.sampled_from(string.punctuation + " "),
    st.characters(codec="utf-8").filter(str.isprintable),
)
USERS = st.text(TEXT, min_size=1).filter(lambda user: ":" not in user)
PASSWORDS = st.text(TEXT, min_size=6)
ORIGINS = st.sampled_from(
    ["http://127.0.0.1:9091", "https://gateway.example", "https://[::1]:443", "http://pg"]
)


def parts_of(password: str) -> set[str]:
    """The password and every 4 characters of it."""
    return {password} | {password[i : i + 4] for i in range(len(password) - 3)}


@given(user=USERS, password=PASSWORDS, origin=ORIGINS)
def test_percent_encoded_credentials_are_read_back_exactly(
    user: str, password: str, origin: str
) -> None:
    """Any user and password, percent-encoded, come back whole, apart from the URL."""
    scheme, rest = origin.split("://")
    gateway = pushgateway(f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}")
    assert gateway.url == origin
    assert gateway.username == user
    assert gateway.password is not None
    assert gateway.password.reveal() == password
    assert "Secret('***')" in repr(gateway)


@given(password=PASSWORDS, origin=ORIGINS)
def test_a_password_as_typed_is_read_whole_or_refused_without_it(
    password: str, origin: str
) -> None:
    """A password not percent-encoded either leaves the URL exactly its origin, or is refused
    by the one message that quotes nothing."""
    scheme, rest = origin.split("://")
    try:
        gateway = pushgateway(f"{scheme}://user:{password}@{rest}")
    except ValueError as exc:
        assert str(exc) == REFUSED  # noqa: PT017 - the message itself is the behaviour
        return
    assert gateway.url == origin
    assert gateway.username == "user"


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("https://user:pw@gateway", "https://gateway"),
        ("user:pw@gateway:9091", "http://gateway:9091"),
        ("https://user:p@ss@gateway:9091/", "https://gateway:9091"),
        ("http://gateway:9091/push/", "http://gateway:9091/push"),
    ],
)
def test_the_url_shown_is_without_credentials(raw: str, url: str) -> None:
    """With or without a port or scheme, the URL kept for pushing and logging has no user."""
    assert pushgateway(raw).url == url


@pytest.mark.parametrize(
    "raw",
    [
        "https://user:Xq7/Zk9v@gateway",  # a / ends the host: the tail would be the path
        "https://user:Xq7?Zk9v@gateway:9091",
        "https://user:Xq7#Zk9v@gateway",
        "https://user:Xq7Zk9v@gateway:port",
        "https://us%3Aer:Xq7Zk9v@gateway",  # a colon in the user: basic auth cannot say it
        "ftp://user:Xq7Zk9v@gateway",
        "https://user:Xq7Zk9v@",
        "https://user:Xq7Zk9v@gate way:9091",  # urllib's InvalidURL at the first push
    ],
)
def test_a_bad_url_is_a_usage_error_of_one_line_without_the_password(
    raw: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL that cannot be read as written exits 2 with one line naming the option."""
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["sync", "--account", "a", "--pushgateway", raw])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    help_hint = "(see follow-etl sync --help)"
    assert err == f"follow-etl sync: error: argument --pushgateway: {REFUSED} {help_hint}\n"
    assert "Xq7" not in err
    assert "Zk9v" not in err


def test_the_push_carries_basic_auth_only_with_credentials() -> None:
    """A gateway with a user gets the decoded credentials as basic auth; one without, the
    plain push."""
    sent: list[object] = []

    def capture(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:  # fmt: skip
        return lambda: sent.append(headers)

    authenticated(pushgateway("https://ops:p%40ss@gateway"), capture)("u", "PUT", 1.0, [], b"")()
    token = base64.b64encode(b"ops:p@ss").decode()
    assert sent == [[("Authorization", f"Basic {token}".encode())]]
    assert authenticated(pushgateway("https://gateway")) is exposition.default_handler
    assert authenticated(pushgateway("https://gateway"), capture) is capture


def test_metrics_push_through_the_handler_they_are_given() -> None:
    """A Metrics' refresh pushes its figures through the injected handler, to the job's URL on
    the gateway, with the gateway's credentials as basic auth."""
    sent: list[tuple[str, str, list[tuple[str, str]], bytes]] = []

    def capture(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Callable[[], None]:  # fmt: skip
        return lambda: sent.append((url, method, headers, data))

    gateway = pushgateway("https://ops:p%40ss@gateway")
    engine = sa.create_engine("sqlite://")
    metrics.Metrics(engine, "nightly", pushgateway=gateway, push_handler=capture).refresh()
    ((url, method, headers, data),) = sent
    assert url.startswith("https://gateway/metrics/job/nightly/instance/")
    assert method == "PUT"
    seen: list[object] = list(headers)  # prometheus_client sends the value as bytes
    assert ("Authorization", f"Basic {base64.b64encode(b'ops:p@ss').decode()}".encode()) in seen
    assert b"follow_etl_last_refresh_timestamp_seconds" in data


def test_a_peer_that_speaks_no_http_costs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A push answered by garbage (http.client's BadStatusLine, not an OSError) is logged with
    the gateway's URL and never stops the process."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

        peer = threading.Thread(target=garbage, daemon=True)
        peer.start()
        gateway = pushgateway(f"http://ops:Xq7Zk9v@127.0.0.1:{port}")
        metrics.Metrics(sa.create_engine("sqlite://"), "nightly", pushgateway=gateway).refresh()
        peer.join(timeout=5)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"cannot push to the Pushgateway at http://127.0.0.1:{port}:" in warning
    assert "Xq7Zk9v" not in warning
