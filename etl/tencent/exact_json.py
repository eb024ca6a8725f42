"""JSON bytes -> Python exactly: no integer rounded, no NaN accepted. Pure."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from etl.errors import MalformedAnswer

# orjson turns an integer literal outside [-2**63, 2**64) into a float, silently losing digits:
# a body with a run of 19 or more digits anywhere (a cheap C-level scan, about 5% of orjson's
# own time) goes to json instead, which keeps every integer exact.
_DIGITS_ONLY = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_NUMBER = b"0" * 19


def _int_or_digits(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:  # longer than sys.get_int_max_str_digits(): kept as its digits
        return text


def _float_or_text(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text  # 1e400: kept as written, not inf


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(
    parse_int=_int_or_digits, parse_float=_float_or_text, parse_constant=_not_json
)


def parse_json(content: bytes) -> Any:
    """JSON bytes -> Python, exactly; MalformedAnswer for anything that is not JSON.

    orjson first (several times faster on 1000-item pages); json for what orjson refuses or
    would round but the standard allows: integers beyond 64 bits, lone surrogate escapes
    (``\\ud83d``). An integer too long for ``int()`` is kept as its digit string, a float
    literal beyond the double range as its text. Bytes that are not UTF-8 become U+FFFD.
    NaN and Infinity, which are not JSON, are refused.
    """
    if content.translate(_DIGITS_ONLY).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    try:
        text = content.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = content.decode("utf-8", "replace")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"{exc.msg} at char {exc.pos}"
        raise MalformedAnswer(f"the answer is not JSON ({what})") from None
    except RecursionError:
        raise MalformedAnswer("the answer is not JSON we can read (nested too deeply)") from None
    except Exception as exc:  # noqa: BLE001 - whatever the decoder meets, it is a bad answer
        raise MalformedAnswer(f"the answer is not JSON ({type(exc).__name__})") from None
