"""etl.live.callbacks: every reason a callback is refused, by hand and generated; and a signed
callback parsed to exactly its changes."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.config import Secret
from etl.live.callbacks import (
    ADD,
    COMMANDS,
    DELETE,
    MAX_EVENT_MS,
    STATUSES,
    Rejection,
    parse,
    sign_for,
)
from etl.live.settings import ListenSettings
from etl.store.live import Change

APP = 1400000001
TOKEN = "s3cret-t0ken"
NOW = 1_700_000_000
SIGNED = ListenSettings(sdkappid=APP, token=Secret(TOKEN), max_body=4096)
UNSIGNED = ListenSettings(sdkappid=APP, token=None, max_body=4096)


def query(
    command: str = ADD,
    *,
    app: object = APP,
    at: int = NOW,
    token: str = TOKEN,
    sign: str | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    """A query as Tencent sends it, signed with ``token`` at ``at`` (``sign``: instead)."""
    fields = [
        ("SdkAppid", str(app)),
        ("CallbackCommand", command),
        ("contenttype", "json"),
        ("ClientIP", "203.0.113.7"),
        ("OptPlatform", "RESTAPI"),
        ("RequestTime", str(at)),
        ("Sign", sign if sign is not None else sign_for(token, str(at))),
        *(extra or []),
    ]
    return urlencode(fields).encode()


def add_body(account: Any = "A", targets: Any = ("B", "C"), at: Any = 1702262118123) -> bytes:
    doc = {
        "CallbackCommand": ADD,
        "From_Account": account,
        "FollowList": [{"To_Account": t} for t in targets],
        "EventTime": at,
    }
    return json.dumps(doc).encode()


def delete_body(account: Any = "A", targets: Any = ("B",), at: Any = 1702262118123) -> bytes:
    doc = {"CallbackCommand": DELETE, "From_Account": account, "To_Account": list(targets)}
    doc["EventTime"] = at
    return json.dumps(doc).encode()


def call(
    body: bytes,
    q: bytes | None = None,
    *,
    method: str = "POST",
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    settings: ListenSettings = SIGNED,
    now: float = NOW,
) -> list[Change] | Rejection:
    return parse(method, path, q if q is not None else query(), headers or [], body, now, settings)


def reason(result: list[Change] | Rejection) -> str:
    assert isinstance(result, Rejection), result
    assert result.status == STATUSES[result.reason]
    assert TOKEN not in result.message
    return result.reason


# ---- accepted ---------------------------------------------------------------------------


def test_a_signed_add_is_one_change_per_to_account() -> None:
    """A signed FollowAdd gives A follows B and A follows C, at EventTime."""
    assert call(add_body()) == [
        Change("A", "B", True, 1702262118123),
        Change("A", "C", True, 1702262118123),
    ]


def test_a_signed_delete_is_one_unfollow_per_to_account() -> None:
    """A signed FollowDelete (a flat To_Account array) gives unfollows."""
    body = delete_body("A", ["B", "é字🙂"], 5)
    assert call(body, query(DELETE)) == [Change("A", "B", False, 5), Change("A", "é字🙂", False, 5)]


def test_an_empty_list_is_accepted_with_nothing_to_apply() -> None:
    """A callback with no To_Account parses to no change (it is not refused)."""
    assert call(add_body(targets=[])) == []
    assert call(delete_body(targets=[]), query(DELETE)) == []


def test_without_a_token_no_signature_is_needed() -> None:
    """A loopback listener without a token takes a request with no Sign or RequestTime."""
    bare = urlencode({"SdkAppid": APP, "CallbackCommand": ADD}).encode()
    assert call(add_body(), bare, settings=UNSIGNED) == call(add_body())


@pytest.mark.parametrize("skew", [-60, 0, 60])
def test_a_request_time_within_60_s_either_side_is_fresh(skew: int) -> None:
    """RequestTime up to 60 s before or after now passes."""
    assert isinstance(call(add_body(), query(at=NOW + skew)), list)


def test_the_sign_may_be_upper_case_hex() -> None:
    """The hex digest is compared without regard to case."""
    upper = sign_for(TOKEN, str(NOW)).upper()
    assert isinstance(call(add_body(), query(sign=upper)), list)


def test_unknown_body_fields_and_exact_big_event_times_are_kept() -> None:
    """Extra fields are ignored; EventTime up to 2**63 - 1 is kept exactly."""
    doc = json.loads(add_body(targets=["B"]))
    doc |= {"EventTime": MAX_EVENT_MS - 1, "Extra": {"x": [1, 2]}}
    assert call(json.dumps(doc).encode()) == [Change("A", "B", True, MAX_EVENT_MS - 1)]


# ---- refused, by hand -------------------------------------------------------------------


def test_another_path_is_404_and_another_method_405() -> None:
    """Only POST on the callback path is a callback."""
    assert reason(call(add_body(), path="/other")) == "path"
    assert reason(call(add_body(), method="GET")) == "method"
    assert reason(call(add_body(), method="PUT")) == "method"


@pytest.mark.parametrize(
    "q",
    [
        query(app=1400000002),
        query(app="01400000001"),
        query(app=""),
        urlencode({"CallbackCommand": ADD}).encode(),
        query(extra=[("SdkAppid", "1400000002")]),  # repeated: which one would a proxy read?
    ],
)
def test_another_app_is_wrong_app(q: bytes) -> None:
    """SdkAppid must be exactly the configured app's, once."""
    assert reason(call(add_body(), q)) == "wrong_app"


@pytest.mark.parametrize(
    "q",
    [
        query(token="another"),
        query(sign=""),
        query(sign="0" * 64),
        query(sign=sign_for(TOKEN, str(NOW))[:-1]),
        urlencode({"SdkAppid": APP, "CallbackCommand": ADD}).encode(),
        urlencode({"SdkAppid": APP, "CallbackCommand": ADD, "RequestTime": NOW}).encode(),
        query(at=NOW, sign=sign_for(TOKEN, "+1700000000")),
        query(extra=[("Sign", "0" * 64)]),
    ],
)
def test_a_bad_or_missing_sign_is_bad_signature(q: bytes) -> None:
    """Sign must be hex sha256(token + RequestTime), present once."""
    assert reason(call(add_body(), q)) == "bad_signature"


def test_a_request_time_that_is_no_number_is_bad_signature() -> None:
    """RequestTime must be Unix seconds, even when signed as given."""
    fields = {"SdkAppid": APP, "CallbackCommand": ADD, "RequestTime": "soon"}
    fields["Sign"] = sign_for(TOKEN, "soon")
    assert reason(call(add_body(), urlencode(fields).encode())) == "bad_signature"


@pytest.mark.parametrize("skew", [-61, 61, -86_400, 10**9])
def test_a_request_time_over_60_s_away_is_a_replay(skew: int) -> None:
    """A correctly signed request whose RequestTime is over 60 s from now is a replay."""
    assert reason(call(add_body(), query(at=NOW + skew))) == "replay"


@pytest.mark.parametrize(
    ("q", "body"),
    [
        (query("Follow.CallbackAfterSomethingElse"), add_body()),
        (query("C2C.CallbackAfterSendMsg"), add_body()),
        (query(DELETE), add_body()),  # the body says add
        (query(ADD), delete_body()),
        (query(extra=[("CallbackCommand", DELETE)]), add_body()),
    ],
)
def test_a_command_not_a_follow_one_or_not_the_bodys_is_unknown_command(
    q: bytes, body: bytes
) -> None:
    """The query's CallbackCommand is one of the two, and the body's is the same."""
    assert reason(call(body, q)) == "unknown_command"


def test_a_body_over_the_cap_is_oversized() -> None:
    """Over max_body, by Content-Length (before reading) or by its length."""
    big = add_body(targets=[f"user{i}" for i in range(400)])
    assert len(big) > SIGNED.max_body
    assert reason(call(big)) == "oversized"
    declared = [(b"content-length", str(SIGNED.max_body + 1).encode())]
    assert reason(call(add_body(), headers=declared)) == "oversized"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"null",
        b'{"CallbackCommand": "Follow.CallbackAfterFollowAdd", "EventTime": NaN}',
        b'{"EventTime": Infinity}',
        b'{"From_Account": "\xff\xfe"}',  # not UTF-8
        b'{"From_Account": "\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8 either
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_what_is_not_a_json_object_is_malformed(body: bytes) -> None:
    """Not UTF-8, not JSON (NaN and Infinity are not), or not an object."""
    wide = ListenSettings(sdkappid=APP, token=Secret(TOKEN), max_body=1 << 20)
    assert reason(call(body, settings=wide)) == "malformed"


def _doc(**fields: Any) -> bytes:
    doc: dict[str, Any] = {"CallbackCommand": ADD, "From_Account": "A", "EventTime": 1}
    doc["FollowList"] = [{"To_Account": "B"}]
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v != "<absent>"}).encode()


@pytest.mark.parametrize(
    "body",
    [
        _doc(CallbackCommand="<absent>"),
        _doc(CallbackCommand=1),
        _doc(From_Account="<absent>"),
        _doc(From_Account=""),
        _doc(From_Account=7),
        _doc(From_Account=["A"]),
        _doc(EventTime="<absent>"),
        _doc(EventTime="1702262118123"),
        _doc(EventTime=1.5),
        _doc(EventTime=1e12),
        _doc(EventTime=-1),
        _doc(EventTime=MAX_EVENT_MS),
        _doc(EventTime=10**40),
        _doc(EventTime=True),
        _doc(FollowList="<absent>"),
        _doc(FollowList={"To_Account": "B"}),
        _doc(FollowList=["B"]),
        _doc(FollowList=[{"to_account": "B"}]),
        _doc(FollowList=[{"To_Account": 5}]),
        _doc(FollowList=[{"To_Account": ""}]),
        _doc(FollowList=[{"To_Account": ["B"]}]),
    ],
)
def test_wrong_field_types_are_wrong_types(body: bytes) -> None:
    """Each field of an add that is missing or not of its type."""
    assert reason(call(body)) == "wrong_types"


@pytest.mark.parametrize("targets", ["B", [{"To_Account": "B"}], [None], ["B", 3], [""], None])
def test_a_delete_to_account_that_is_not_a_list_of_ids_is_wrong_types(targets: Any) -> None:
    """To_Account of a delete is a flat list of strings."""
    doc = {"CallbackCommand": DELETE, "From_Account": "A", "To_Account": targets, "EventTime": 1}
    assert reason(call(json.dumps(doc).encode(), query(DELETE))) == "wrong_types"


@pytest.mark.parametrize(
    "body",
    [
        add_body(account="A\x00B"),
        add_body(targets=["B", "C\x00"]),
        b'{"CallbackCommand": "Follow.CallbackAfterFollowAdd", "From_Account": "\\ud83d", '
        b'"FollowList": [], "EventTime": 1}',
        add_body(targets=["\ud800x"]),  # json.dumps escapes it as \\ud800
        add_body(account="a" * 256),
        add_body(targets=["é" * 128]),  # 256 bytes of UTF-8
    ],
)
def test_an_id_the_tables_cannot_hold_is_unstorable(body: bytes) -> None:
    """NUL, a lone surrogate, over 255 bytes: the crawl's rule for a key."""
    assert reason(call(body)) == "unstorable"


def test_ids_at_the_key_limit_are_accepted() -> None:
    """255 bytes of UTF-8 is still a key."""
    assert isinstance(call(add_body(account="a" * 255, targets=["é" * 127 + "x"])), list)


# ---- refused, generated ------------------------------------------------------------------


def _key(value: Any) -> bool:
    """Independently of the code: a value the tables can hold as an account id."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    try:
        return len(value.encode("utf-8")) <= 255
    except UnicodeEncodeError:
        return False


def expected(command: str, doc: Any) -> list[Change] | None:
    """The changes a body must give, or None when it must be refused (a second reading of the
    rules, written apart from the code)."""
    if not isinstance(doc, dict) or doc.get("CallbackCommand") != command:
        return None
    account: Any = doc.get("From_Account")
    at: Any = doc.get("EventTime")
    if not _key(account) or type(at) is not int or not 0 <= at < 2**63:
        return None
    targets: Any
    if command == ADD:
        items = doc.get("FollowList")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return None
        targets = [i.get("To_Account") for i in items]
    else:
        targets = doc.get("To_Account")
    if not isinstance(targets, list) or not all(_key(t) for t in targets):
        return None
    return [Change(account, t, command == ADD, at) for t in targets]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
HOSTILE_IDS = st.sampled_from(["a" * 255, "a" * 256, "x\x00", "\ud800", "", "é" * 128])
IDS = st.one_of(
    st.sampled_from(["A", "B", "C", "é字"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=4),
    HOSTILE_IDS,
)
MISSING = object()


@st.composite
def _usually(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A field's value: 7 times in 10 a plausible one, else any JSON, or absent."""
    roll = draw(st.integers(0, 9))
    if roll < 7:
        return draw(valid)
    return draw(JSON) if roll < 9 else MISSING


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, Any]:
    """A command and a body document near a valid one."""
    command = draw(st.sampled_from(COMMANDS))
    ids = st.lists(IDS, max_size=4)
    targets = (
        ids.map(lambda xs: [{"To_Account": x} for x in xs]) | st.lists(JSON, max_size=2)
        if command == ADD
        else ids
    )
    fields = {
        "CallbackCommand": draw(_usually(st.sampled_from(COMMANDS))),
        "From_Account": draw(_usually(IDS)),
        "EventTime": draw(_usually(st.integers(-5, 2**64) | st.sampled_from([0, 2**63 - 1]))),
        "FollowList" if command == ADD else "To_Account": draw(_usually(targets)),
    }
    return command, {k: v for k, v in fields.items() if v is not MISSING}


@settings(max_examples=400)
@given(bodies(), st.booleans())
def test_generated_bodies_give_exactly_their_changes_or_a_rejection(
    case: tuple[str, Any], ascii_only: bool
) -> None:
    """Whatever the fields hold, the result is the changes a second reading of the rules
    expects, or a Rejection when it expects none."""
    command, doc = case
    body = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    wide = ListenSettings(sdkappid=APP, token=Secret(TOKEN), max_body=1 << 20)
    result = call(body, query(command), settings=wide)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:  # a surrogate written raw: not UTF-8
        assert reason(result) == "malformed"
        return
    want = expected(command, doc)
    if want is None:
        assert isinstance(result, Rejection)
        reason(result)
    else:
        assert result == want


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """Any bytes, or a valid body with a slice of it replaced by any bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    body = add_body(targets=draw(st.lists(st.sampled_from(["B", "C", "D"]), max_size=3)))
    start = draw(st.integers(0, len(body)))
    end = draw(st.integers(start, min(len(body), start + 4)))
    return body[:start] + draw(st.binary(max_size=4)) + body[end:]


@settings(max_examples=400)
@given(mangled())
def test_any_bytes_as_a_body_are_changes_only_when_they_are_a_callback(body: bytes) -> None:
    """Any bytes: never an exception, and changes only for a body that is a callback."""
    result = call(body)
    if isinstance(result, list):
        assert result == expected(ADD, json.loads(body))
    else:
        reason(result)


QUERY_VALUES = st.one_of(
    st.text(max_size=70),
    st.sampled_from([str(APP), ADD, DELETE, str(NOW), sign_for(TOKEN, str(NOW)), ""]),
    st.integers(NOW - 100, NOW + 100).map(str),
)


@st.composite
def queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A signed query (at a RequestTime up to 100 s away), with fields dropped, repeated or
    replaced by any value."""
    at = str(NOW + draw(st.integers(-100, 100)))
    fields = [
        ("SdkAppid", str(APP)),
        ("CallbackCommand", ADD),
        ("RequestTime", at),
        ("Sign", sign_for(TOKEN, at)),
    ]
    for _ in range(draw(st.integers(0, 3))):
        n = draw(st.integers(0, len(fields) - 1))
        move = draw(st.sampled_from(["drop", "repeat", "replace", "add"]))
        name = fields[n][0]
        if move == "drop":
            del fields[n]
        elif move == "repeat":
            fields.append((name, draw(QUERY_VALUES)))
        elif move == "replace":
            fields[n] = (name, draw(QUERY_VALUES))
        else:
            fields.append((draw(st.text(max_size=10)), draw(QUERY_VALUES)))
        if not fields:
            break
    return fields


@settings(max_examples=400)
@given(queries(), st.booleans())
def test_any_query_is_refused_unless_it_is_signed_for_this_app(
    fields: list[tuple[str, str]], with_token: bool
) -> None:
    """Any query values: a Rejection, unless each checked field is there once and right."""
    the = {name: [v for n, v in fields if n == name] for name, _ in fields}
    settings_ = SIGNED if with_token else UNSIGNED
    result = call(add_body(), urlencode(fields).encode(), settings=settings_)
    one = {name: values[0] for name, values in the.items() if len(values) == 1}
    right = one.get("SdkAppid") == str(APP) and one.get("CallbackCommand") == ADD
    if with_token:
        at = one.get("RequestTime", "")
        right = right and at.isascii() and at.isdigit() and abs(int(at) - NOW) <= 60
        right = right and one.get("Sign", "").lower() == sign_for(TOKEN, at)
    if right:
        assert isinstance(result, list)
    else:
        reason(result)


@settings(max_examples=200)
@given(st.text(max_size=8), st.text(max_size=12), st.binary(max_size=200), st.binary(max_size=40))
def test_any_request_line_and_headers_never_raise(
    method: str, path: str, raw_query: bytes, length: bytes
) -> None:
    """Any method, path, raw query and Content-Length: a Rejection or changes, nothing else."""
    result = call(
        add_body(), raw_query, method=method, path=path, headers=[(b"content-length", length)]
    )
    if isinstance(result, Rejection):
        reason(result)
    else:
        assert (method, path) == ("POST", "/")
