"""One exception tree for everything follow-etl raises on purpose.

    EtlError                      base; carries the process exit code the CLI uses
    ├── UsageError          (2)   bad arguments or input file; nothing was fetched
    ├── ConfigError         (3)   missing or invalid configuration; nothing was fetched
    ├── DatabaseError       (5)   the database cannot be reached or refused a statement
    ├── RunIncomplete       (6)   the run stopped early with lists left to do (resumable), or
    │                             ended with lists given up or held for a mass removal
    ├── JobBusy             (7)   another `sync` of the job is running (use --wait or `worker`)
    ├── Interrupted  (130 / 143)  SIGINT / SIGTERM: stopped cleanly, the run is resumable
    ├── VerifyMismatch      (9)   `verify` found stored lists whose size the API disagrees with
    └── ApiError                  the follow API answered an error or could not be reached
        ├── TransientApiError     worth retrying: 30006, 30007, 60008, 60014, HTTP 5xx,
        │   │                     timeouts, connection errors, a body that is not JSON
        │   ├── RateLimitedError  60007, 60011, 60018, 60019 (and HTTP 429): slow down first
        │   └── MalformedAnswer   "OK" (ErrorCode 0) but not a page: retried like 30006
        ├── AccountNotFound       30003: the account does not exist; skip its lists
        ├── RequestRejected       30001: bad parameter; on a resumed cursor, restart the list
        │   └── CursorLoop        a cursor came back within one crawl of a list: give it up
        └── FatalApiError   (4)   credentials, app or client bug: stop the run (resumable)
    Stopped                       internal, never reaches the user: a wait (retry backoff,
                                  pacing, reconnect) was cut short by a stop request

Messages never contain the secret key or a UserSig: the request URL, which carries the
UserSig, is never put into an error.

``EXIT_CODES`` (at the end) is the one table of the process exit codes: what each means, the
words ``--help`` shows for it, and the exception class that carries it. The README's "Exit
codes" table and the classes' ``exit_code`` are checked against it (tests/unit/test_exit_codes).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class EtlError(Exception):
    """Base of every error follow-etl raises on purpose."""

    exit_code = 1
    # What was done before it was raised, where there is something (etl.api): the SyncReport
    # of RunIncomplete and Interrupted, the Verification of VerifyMismatch.
    result: Any = None


class UsageError(EtlError):
    """The command line or an input file is wrong."""

    exit_code = 2


class ConfigError(EtlError):
    """The configuration (environment) is missing something or is invalid."""

    exit_code = 3


class DatabaseError(EtlError):
    """The database cannot be reached, is not migrated, or refused a statement."""

    exit_code = 5


class RunIncomplete(EtlError):
    """The run ended with lists left to do; the next ``sync`` of the job resumes it."""

    exit_code = 6


class JobBusy(EtlError):
    """Another live ``sync`` process holds the job."""

    exit_code = 7


class Interrupted(EtlError):
    """A signal stopped the sync cleanly; the run is resumable. Exit code 128 + signal."""

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class VerifyMismatch(EtlError):
    """Stored lists disagree with the counts follow_get_info returns (``verify``)."""

    exit_code = 9


class ApiError(EtlError):
    """The follow API answered with an error, or could not be reached."""

    exit_code = 6

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientApiError(ApiError):
    """An error that a later retry may not see."""


class RateLimitedError(TransientApiError):
    """The service says we call too often: wait longer before the retry."""


class MalformedAnswer(TransientApiError):
    """HTTP 200 and ErrorCode 0, but the body is not a follow_get page (see etl.transform)."""


class AccountNotFound(ApiError):
    """30003: the requested account does not exist."""


class RequestRejected(ApiError):
    """30001: the service rejected a request parameter (a stale cursor, most likely)."""


class CursorLoop(RequestRejected):
    """The service answered a cursor already seen in this crawl of the list: it would never end."""


class FatalApiError(ApiError):
    """An answer no retry can fix: wrong credentials, app not enabled, or a client bug."""

    exit_code = 4


class Stopped(Exception):
    """A wait was cut short because the process was asked to stop; never shown to a user."""


class ExitCode(NamedTuple):
    """One row of the exit-code table."""

    meaning: str  # one line: what a process that ends with this code says about the run
    brief: str  # the few words the exit-code list of ``--help`` shows
    error: type[EtlError] | None = None  # the exception that carries it (None: no EtlError)


# code -> meaning; the classes' own ``exit_code`` must agree (Interrupted's is 128 + signal)
EXIT_CODES: dict[int, ExitCode] = {
    0: ExitCode(
        "every requested list finished (lists of accounts that do not exist count, and are "
        "named); a `worker` whose run `sync --restart` abandoned",
        "done",
    ),
    1: ExitCode("internal error (a bug: rerun with --debug for the traceback)", "internal error"),
    2: ExitCode(
        "usage error: bad arguments or accounts file; nothing was fetched", "usage", UsageError
    ),
    3: ExitCode(
        "configuration error: missing or invalid environment; nothing was fetched",
        "configuration",
        ConfigError,
    ),
    4: ExitCode(
        "the API refused the credentials or the app (wrong key, not admin, feature off); resumable",
        "API refused credentials or app",
        FatalApiError,
    ),
    5: ExitCode(
        "database error: unreachable, not migrated, or a statement failed; resumable",
        "database",
        DatabaseError,
    ),
    6: ExitCode(
        "the run stopped early with lists left (resumable), or ended with lists given up or "
        "held for a mass removal not confirmed (nothing of theirs removed), or another "
        "`sync --restart` abandoned it",
        "lists left (resumable), given up or held",
        RunIncomplete,
    ),
    7: ExitCode(
        "another `sync` of the job is running (another process or machine): try later, use "
        "--wait, or add a `worker`",
        "the job is already running",
        JobBusy,
    ),
    9: ExitCode(
        "verify: stored lists disagree with the API's counts (after --repair: still disagree)",
        "verify found lists that disagree",
        VerifyMismatch,
    ),
    130: ExitCode(
        "interrupted (Ctrl-C): in-flight pages stored, leases released; resumable",
        "interrupted (Ctrl-C)",
        Interrupted,
    ),
    143: ExitCode(
        "stopped by SIGTERM, the same way; resumable", "SIGTERM (both resumable)", Interrupted
    ),
}

EXIT_INTERNAL = 1  # what any exception that is not an EtlError ends with (a bug)
EXIT_INTERRUPTED = 130  # a KeyboardInterrupt that got past the graceful stop (SIGINT)
