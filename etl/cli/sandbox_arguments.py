"""The arguments of the commands that serve the stand-in follow API: ``sandbox`` (its webhook
among them) and ``demo``; etl.cli.arguments lists them with the others."""

from __future__ import annotations

import argparse

from etl.cli import values
from etl.cli.commands import cmd_demo, cmd_sandbox
from etl.cli.parser import Commands


def add_sandbox(commands: Commands) -> argparse.ArgumentParser:
    from etl.sandbox.faults import DEFAULT_FAULT_KINDS, FAULT_KINDS

    p = commands.add_parser("sandbox", help="serve the stand-in follow API in the foreground")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--users", type=values.positive(int), default=1000, help="graph size (default 1000)"
    )
    p.add_argument("--seed", type=int, default=1, help="graph seed (default 1)")
    p.add_argument(
        "--faults",
        type=float,
        default=0.0,
        metavar="P",
        help="share of requests answered with a transient fault (0..1)",
    )
    p.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="L", help="added to every answer"
    )
    p.add_argument(
        "--rate",
        type=values.rate,
        default=None,
        metavar="R",
        help="answer 60007 above R calls per second (default: no limit)",
    )
    p.add_argument(
        "--fault-kinds",
        type=values.fault_kinds,
        default=None,
        metavar="LIST",
        help=f"comma-separated kinds of fault --faults draws from: {','.join(FAULT_KINDS)} "
        f"(default {','.join(DEFAULT_FAULT_KINDS)})",
    )
    p.add_argument(
        "--hostile",
        type=values.share,
        default=0.0,
        metavar="P",
        help="share of users with hostile profiles (NUL, lone surrogates, huge integers, nested "
        "tags), plus a few users with hostile ids in other users' lists (default 0)",
    )
    p.add_argument(
        "--loop-account",
        action="append",
        default=[],
        metavar="ID",
        help="this account's lists never end: their last page points back at the second "
        "(repeatable)",
    )
    p.add_argument(
        "--degree",
        type=values.positive(float),
        default=None,
        metavar="D",
        help="mean number of accounts a user follows (default 12); a low D makes a sparse graph "
        "of many users cheap to build, e.g. --users 1000000 --degree 1",
    )
    p.add_argument(
        "--big-lists",
        type=values.big_lists,
        default=(),
        metavar="N,N,...",
        help="give that many seeded accounts N synthetic fans each, e.g. 200000,50000: a few "
        "very long fans lists among the ordinary ones (default none)",
    )
    _webhook_options(p)
    p.set_defaults(func=cmd_sandbox)
    return p


def _webhook_options(p: argparse.ArgumentParser) -> None:
    """``sandbox``'s webhook: where its graph's changes are posted, with which faults."""
    hooks = p.add_argument_group(
        "webhook",
        "post every change of the graph (POST /sandbox/follow, /sandbox/unfollow, mutate) to a "
        "URL as Chat's follow callbacks, signed with $IM_CALLBACK_TOKEN when it is set; "
        "GET /sandbox/webhook says what became of them",
    )
    hooks.add_argument(
        "--webhook-url", default=None, metavar="URL", help="where to post (default: nowhere)"
    )
    hooks.add_argument(
        "--webhook-drops",
        type=values.share,
        default=0.0,
        metavar="P",
        help="share of callbacks never sent (default 0)",
    )
    hooks.add_argument(
        "--webhook-duplicates",
        type=values.share,
        default=0.0,
        metavar="P",
        help="share of callbacks sent twice (default 0)",
    )
    hooks.add_argument(
        "--webhook-reorder",
        type=values.count(0),
        default=0,
        metavar="N",
        help="hold callbacks back until N wait, then send them shuffled (default 0: in order)",
    )
    hooks.add_argument(
        "--webhook-delay-ms",
        type=values.delay_range,
        default=(0.0, 0.0),
        metavar="[LO-]HI",
        help="delay each post by a time drawn from LO..HI ms (default 0)",
    )


def add_demo(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "demo", help="what `make demo` runs: sandbox + listener + embedded database + sync"
    )
    p.add_argument("--users", type=values.positive(int), default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=values.rate, default=150.0)
    p.set_defaults(func=cmd_demo)
    return p
