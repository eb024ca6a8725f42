"""Generated profiles: which tags a sandbox user has, and their values at each profile_sequence.

Which tags a user has is fixed per user (seeded by the graph's seed and the user's id); their
values are drawn again whenever the sequence moves, so an overlay that bumps a user's
profile_sequence changes the profile the way an edit in a real app does.
"""

from __future__ import annotations

import random

_NICKS = (
    "Alice", "bob", "Charlie", "dora_x", "Eve", "Frank", "gina.l", "Hiro", "Ines", "Jun",
    "小明", "王芳", "李雷", "韩梅梅", "张伟", "陈静", "🐼 panda", "Lena ✨", "Mü11er", "Zoë",
    "김민수", "さくら", "Олег", "🎧DJ", "O'Brien", "quote\"d", "back\\slash", "100%real",
)  # fmt: skip
_LOCATIONS = ("广东 深圳", "北京", "上海", "Singapore", "Seoul", "Tokyo", "Berlin", "São Paulo")
_SIGNATURES = (
    "",
    "hello",
    "生活明朗\uff0c万物可爱",
    "ping me ☕",
    "busy",
    "line\nbreak",
    "<b>hi</b>",
)
_HOBBIES = ("reading", "hiking", "吉他", "gaming", "photography", "🍜 food")
_CITIES = ("Shenzhen", "Chengdu", "Singapore", "Jakarta", "Frankfurt", "Mumbai")
_VIPS = ("0", "1", "gold", "platinum")
_GENDERS = ("Gender_Type_Unknown", "Gender_Type_Female", "Gender_Type_Male")
_ALLOW_TYPES = ("AllowType_Type_NeedConfirm", "AllowType_Type_AllowAny", "AllowType_Type_DenyAny")


def profile_tags(seed: int, user: str, seq: int) -> list[dict[str, object]]:
    """ProfileItem tags of ``user`` at profile_sequence ``seq`` in the world of ``seed``."""
    # Which tags a user has is fixed per user; their values follow the sequence. Seeded
    # with bytes (the same stream as the str) so that hostile ids seed too.
    key = f"{seed}|{user}".encode("utf-8", "surrogatepass")
    shape = random.Random(key)
    rng = random.Random(key + f"|{seq}".encode())
    nick = rng.choice(_NICKS) + (str(rng.randrange(100)) if rng.random() < 0.5 else "")
    birthday = rng.randint(1960, 2008) * 10000 + rng.randint(1, 12) * 100 + rng.randint(1, 28)
    forbid = "AdminForbid_Type_SendOut" if rng.random() < 0.03 else "AdminForbid_Type_None"
    standard: list[tuple[str, object]] = [
        ("Nick", nick),
        ("Gender", rng.choice(_GENDERS)),
        ("BirthDay", birthday),
        ("Location", rng.choice(_LOCATIONS)),
        ("SelfSignature", rng.choice(_SIGNATURES)),
        ("AllowType", rng.choice(_ALLOW_TYPES)),
        ("Language", rng.randrange(0, 4)),
        ("Image", f"https://avatars.sandbox.example/{user}/{rng.randrange(1 << 32):08x}.png"),
        ("MsgSettings", rng.randrange(0, 4)),
        ("AdminForbidType", forbid),
        ("Level", rng.randrange(0, 100)),
        ("Role", rng.randrange(0, 8)),
    ]
    tags: list[dict[str, object]] = [
        {"Tag": "Tag_Profile_IM_" + name, "Value": value}
        for name, value in standard
        if name == "Nick" or shape.random() < 0.6
    ]
    for name, pool in (("Hobby", _HOBBIES), ("City", _CITIES), ("Vip", _VIPS)):
        if shape.random() < 0.2:
            tags.append({"Tag": "Tag_Profile_Custom_" + name, "Value": rng.choice(pool)})
    return tags
