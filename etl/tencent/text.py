"""Text from the API as the tables can hold it. Pure.

PostgreSQL text and jsonb cannot hold NUL; UTF-8 (so neither database driver) cannot encode a
surrogate, and JSON's \\ud83d without its low half decodes to exactly that. Such text is stored
with U+FFFD in their place; a To_Account that holds them cannot be a key at all.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_KEY_BYTES = 255  # a To_Account longer than this is no key (Tencent documents 32 bytes)

_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD."""
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    return _UNSTORABLE_CHARS.sub("\ufffd", text)


def needs_replacing(text: str) -> bool:
    """True when ``text`` holds NUL or a lone surrogate (storable_text would change it)."""
    return "\x00" in text or (not text.isascii() and _UNSTORABLE_CHARS.search(text) is not None)


def key_problem(to_account: Any) -> str | None:
    """Why ``to_account`` cannot be a key in the tables, or None when it can."""
    if not isinstance(to_account, str):
        return "To_Account: not a string"
    if not to_account:
        return "To_Account: empty"
    if "\x00" in to_account:
        return "To_Account: contains NUL"
    if to_account.isascii():
        size = len(to_account)
    else:
        try:
            size = len(to_account.encode())
        except UnicodeEncodeError:
            return "To_Account: contains a lone surrogate"
    if size > MAX_KEY_BYTES:
        return f"To_Account: over {MAX_KEY_BYTES} bytes"
    return None


def raw_json(value: Any) -> str:
    """Exact ASCII JSON: \\u0000, lone \\ud83d, NaN, integers of any size, as they were."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
