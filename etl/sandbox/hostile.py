"""Hostile data for the sandbox's graph (``Graph(hostile=P)``): what an app's users can set,
or a service can send, that a naive parse or load cannot take.

Profiles: NUL and lone UTF-16 surrogates in text, control characters, sequences past 2**63,
past 2**64 and below zero, tags holding objects, arrays, bools and null, integers past 2**64,
one integer of 5000 digits (past Python's int-from-text limit, so a ``BigNumber``) and one
string of 200,000 characters. Ids: ``HOSTILE_IDS``, users that appear only inside other
users' lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Users with hostile ids (hostile > 0 only): in other users' lists, never in ``accounts``.
HOSTILE_IDS = ("evil\x00nul", "evil\ud83dhigh", "evil\udc00low", "evil\x00\ud83d")
HOSTILE_EDGES = 6  # ordinary users each hostile id follows, and as many that follow it
_CONTROL = "ctrl\x01\x07\x08\x1b[31mred\x7f\u2028\u2029\t\r\n\x1f"
_LONG_TEXT = "0123456789abcdef" * 12_500  # 200,000 characters
_HUGE_DIGITS = 5000  # beyond Python's default int <-> str limit of 4300 digits


@dataclass(frozen=True)
class BigNumber:
    """An integer too long for Python's ``int()`` from text, kept as its decimal digits.

    The sandbox writes it as a bare JSON number; a client keeping it exact reads it back as
    the same digit string (etl.tencent.exact_json.parse_json does).
    """

    digits: str = field(repr=False)


def hostile_profile(
    rank: int, seq: int, tags: list[dict[str, object]]
) -> tuple[int, list[dict[str, object]]]:
    """(profile_sequence, ProfileItem) of the ``rank``-th hostile user, from its ordinary ones.

    Every hostile user has: a nick with NUL (even ranks) or a lone surrogate (odd ranks; high
    half, or low half every fourth), control characters in its signature, a Level past 2**64,
    custom tags holding an object, an array, a bool, null and an integer past 2**64. Its
    sequence lies in (2**63, 2**64) for three ranks in five, past 2**64 or below zero for the
    others, and still moves up with the ordinary one. Rank 0 also carries a 5000-digit integer
    (a BigNumber), rank 1 a 200,000-character string.
    """
    kind = rank % 5
    if kind <= 2:
        sequence = 2**63 + 1 + rank * 1_000_003 + seq
    elif kind == 3:
        sequence = 2**64 + rank + seq
    else:
        sequence = seq - 1_000_000
    half = chr(0xD83D) if rank % 4 != 3 else chr(0xDC00)  # a high or a low half alone
    values: dict[str, object] = {
        "Tag_Profile_IM_Nick": f"nul\x00nick{rank}" if rank % 2 == 0 else f"panda {half}{rank}",
        "Tag_Profile_IM_SelfSignature": _CONTROL,
        "Tag_Profile_IM_Level": 2**64 + 1 + rank,
        "Tag_Profile_Custom_Obj": {"a": [1, True, None, {"b": "c"}], "n": 2**70, "f": 0.5},
        "Tag_Profile_Custom_Arr": [1, "two", [3], {"four": 4}, False, None],
        "Tag_Profile_Custom_Bool": True,
        "Tag_Profile_Custom_Null": None,
        "Tag_Profile_Custom_Big": 2**70 + rank,
    }
    if rank == 0:
        digits = "".join(str((i * 7 + 3) % 10) for i in range(_HUGE_DIGITS))
        values["Tag_Profile_Custom_Huge"] = BigNumber("9" + digits[1:])
    if rank == 1:
        values["Tag_Profile_Custom_Long"] = _LONG_TEXT
    kept = [tag for tag in tags if tag["Tag"] not in values]
    return sequence, kept + [{"Tag": tag, "Value": value} for tag, value in values.items()]
