"""UserSig (TLSSigAPIv2): the reference test vectors and the service's checks."""

from __future__ import annotations

import pytest

from etl.tencent import usersig
from etl.tencent.usersig import UserSigRejected, UserSigSource

KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
APP = 1400000000


@pytest.mark.parametrize(
    ("identifier", "expire", "sig"),
    [
        ("xiaojun", 15552000, "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="),
        ("administrator", 86400, "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60="),
    ],
)
def test_reference_vectors(identifier: str, expire: int, sig: str) -> None:
    """A generated UserSig decodes to the reference's fields and TLS.sig."""
    fields = usersig.decode(usersig.generate(APP, identifier, KEY, now=1700000000, expire=expire))
    assert (fields.identifier, fields.sdkappid, fields.time, fields.expire) == (
        identifier,
        APP,
        1700000000,
        expire,
    )
    assert fields.sig == sig


def test_alphabet_is_url_friendly() -> None:
    """The outer base64 uses * - _ instead of + / =."""
    sig = usersig.generate(APP, "administrator", KEY, now=1700000000, expire=86400)
    assert not set(sig) & set("+/=")


def test_round_trip_verifies() -> None:
    """What generate makes, verify accepts until it expires."""
    sig = usersig.generate(APP, "administrator", KEY, now=1000, expire=60)
    fields = usersig.verify(sig, sdkappid=APP, identifier="administrator", secret_key=KEY, now=1060)
    assert fields.expires_at == 1060


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"now": 1061}, usersig.EXPIRED),
        ({"secret_key": "another-key"}, usersig.WRONG_KEY),
        ({"identifier": "someone"}, usersig.WRONG_IDENTIFIER),
        ({"sdkappid": APP + 1}, usersig.WRONG_APPID),
    ],
)
def test_verify_rejects(change: dict[str, object], code: int) -> None:
    """Expired, wrong key, wrong identifier and wrong app each get their service error code."""
    sig = usersig.generate(APP, "administrator", KEY, now=1000, expire=60)
    args: dict[str, object] = {
        "sdkappid": APP,
        "identifier": "administrator",
        "secret_key": KEY,
        "now": 1000,
    }
    args.update(change)
    with pytest.raises(UserSigRejected) as caught:
        usersig.verify(sig, **args)  # type: ignore[arg-type]
    assert caught.value.code == code


@pytest.mark.parametrize("garbage", ["", "not base64!", "aGVsbG8_"])
def test_garbage_is_invalid(garbage: str) -> None:
    """Strings that are not a UserSig are rejected, never crash."""
    with pytest.raises(UserSigRejected) as caught:
        usersig.decode(garbage)
    assert caught.value.code in (usersig.EMPTY, usersig.INVALID)


def test_source_renews_before_expiry() -> None:
    """A derived UserSig is replaced once 90% of its life has passed, and on demand."""
    now = [1000.0]
    source = UserSigSource(
        sdkappid=APP, identifier="administrator", secret_key=KEY, expire=100, clock=lambda: now[0]
    )
    first = source.current()
    now[0] = 1089.0
    assert source.current() == first
    now[0] = 1090.0
    second = source.current()
    assert second != first
    assert usersig.decode(second).time == 1090
    now[0] = 1095.0
    source.renew()
    assert usersig.decode(source.current()).time == 1095


def test_source_hides_the_sig() -> None:
    """The repr of a source never shows the UserSig or the key."""
    source = UserSigSource(sdkappid=APP, identifier="a", secret_key=KEY, clock=lambda: 1.0)
    text = repr(source)
    assert source.current() not in text
    assert KEY not in text
