"""The command line: parse the arguments, run the command (etl.cli.commands, over etl.api),
and end with the exit code of what it raised (etl.session.as_error, the one mapping).

    __init__    build_parser and main
    parser      the parser's common parts: the help texts, the global and metrics options
    arguments   one function per command adding its arguments, with their help text
    values      the options' values, parsed
    commands    one function per command: parse -> call etl.api -> print
    output      everything the commands print
    signals     Ctrl-C / SIGTERM: a graceful stop, or at once (migrate)
    crawling    what a crawling command runs inside: metrics, progress, the summary on failure
    progress    the progress display: a live bar, or periodic log lines

Exit codes: etl.errors.EXIT_CODES, the one table of them; ``--help`` lists it (the README's
"Exit codes" table is checked against it).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
from collections.abc import Sequence

from etl import __version__
from etl.cli import output
from etl.cli.arguments import COMMANDS
from etl.cli.parser import EPILOG, Parser, global_options
from etl.console import CONTEXT, error, setup_logging
from etl.errors import EXIT_INTERNAL
from etl.session import as_error

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``follow-etl`` / ``python -m etl``."""
    parser = Parser(
        prog="follow-etl",
        description="Crawl the Tencent Cloud Chat follow graph into a SQL database, resumably.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:  # in the order `--help` lists them
        global_options(add(commands), top=False)  # `sync --log-format json ...` works too
    return parser


def program() -> int:
    """The ``follow-etl`` program: ``main``, then the process ends.

    Before it ends, every object still alive is frozen out of the cyclic collector: the
    interpreter's exit otherwise scans the whole heap of a crawl again (measured: 0.5-1.0 s
    after a big-list sync, a fifth of its wall time). Only the program does this, never
    ``main`` called in someone else's process.
    """
    code = main()
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # Known before parsing, so that even a usage error is a JSON line when JSON was asked for.
    if any(w == "--log-format=json" or (w == "--log-format" and n == "json")
           for w, n in itertools.pairwise([*words, ""])):  # fmt: skip
        setup_logging(0, "json")
    args = parser.parse_args(words)
    if args.command == "sandbox" and not 0 <= args.faults <= 1:
        parser.error("--faults must be between 0 and 1")
    setup_logging(args.verbosity, args.log_format)
    CONTEXT["pid"] = os.getpid()
    if isinstance(getattr(args, "job", None), str):
        CONTEXT["job"] = args.job
    try:
        result: int = args.func(args)
        return result
    except (Exception, KeyboardInterrupt) as exc:  # the last resort: one line, no traceback
        failure = as_error(exc)
        if failure is None:  # a bug
            if args.debug:
                raise
            output.internal_error(exc)
            return EXIT_INTERNAL
        error(str(failure), failure.exit_code)
        return failure.exit_code
