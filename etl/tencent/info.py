"""follow_get_info answers: an account's fans, follows and mutual counts, 20 accounts a call.

Used by ``verify`` (stored lists against the API's counts), the fetchers (a list's counts at its
end) and etl.tencent.sizes (how big a list never crawled before is). Every account asked gets an
:class:`Answer`: counts, missing, or an error; a refused batch is asked one account at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etl.errors import AccountNotFound, RequestRejected
from etl.tencent.client import FollowClient
from etl.tencent.codes import NOT_FOUND

INFO_BATCH = 20  # To_Account per follow_get_info call: the reference's maximum
API_FIELDS = {1: "FollowerCount", 2: "FollowingCount", 3: "MutualFollowingCount"}


@dataclass(frozen=True, slots=True)
class Answer:
    """What follow_get_info said of one account: counts by type, missing, or an error."""

    counts: dict[int, int]
    missing: bool = False
    error: str | None = None


def ask(client: FollowClient, accounts: list[str]) -> dict[str, Answer]:
    """follow_get_info for up to 20 accounts; every account gets an answer."""
    try:
        body = client.follow_get_info(accounts)
    except (AccountNotFound, RequestRejected) as exc:
        if len(accounts) == 1:
            if isinstance(exc, AccountNotFound):
                return {accounts[0]: Answer({}, missing=True)}
            return {accounts[0]: Answer({}, error=str(exc))}
        # The whole call was refused and the answer does not say which account (To_Account
        # or the From_Account) it objects to: ask for each one alone.
        answers: dict[str, Answer] = {}
        for account in accounts:
            answers.update(ask(client, [account]))
        return answers
    return _parse(body, accounts)


def _parse(body: dict[str, Any], accounts: list[str]) -> dict[str, Answer]:
    items = body.get("FollowInfo")
    if not isinstance(items, list):
        lost = Answer({}, error="follow_get_info: the answer has no FollowInfo list")
        return dict.fromkeys(accounts, lost)
    found: dict[str, Answer] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("To_Account"), str):
            found[item["To_Account"]] = _item(item)
    absent = Answer({}, error="follow_get_info: the account is not in the answer")
    return {account: found.get(account, absent) for account in accounts}


def _item(item: dict[str, Any]) -> Answer:
    code = item.get("ResultCode", 0)
    if code == NOT_FOUND:
        return Answer({}, missing=True)
    if code != 0:
        info = str(item.get("ResultInfo") or "error")[:200]
        return Answer({}, error=f"follow_get_info: {info} ({code})")
    counts: dict[int, int] = {}
    for follow_type, name in API_FIELDS.items():
        value = item.get(name)
        if type(value) is not int or value < 0:
            return Answer({}, error=f"follow_get_info: the answer has no valid {name}")
        counts[follow_type] = value
    return Answer(counts)
