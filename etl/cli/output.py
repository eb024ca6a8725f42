"""Everything the commands print: the one place that turns results into lines for a person
(stdout, secrets masked by etl.console.say), or into the JSON documents ``--json`` asks for.
The final error line is etl.console.error's."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl import api, results
from etl.config import Settings
from etl.console import error, say
from etl.results import SyncReport
from etl.store import db
from etl.tencent.page import TYPE_NAMES

if TYPE_CHECKING:
    from etl.demo import LiveFollow
    from etl.report import ReportData
    from etl.sandbox import Graph, SandboxConfig

log = logging.getLogger("etl.cli")

VERIFY_SHOWN = 20  # disagreeing lists and missing accounts printed; the rest are counted


def document(doc: Any, *, ascii_only: bool = False) -> None:
    """A ``--json`` document, indented; ``ascii_only``: non-ASCII as ``\\u`` escapes."""
    say(json.dumps(doc, indent=2, ensure_ascii=ascii_only))


def internal_error(exc: BaseException) -> None:
    """The line of a bug (exit 1), on stderr."""
    say(
        f"follow-etl: internal error: {type(exc).__name__}: {exc} (--debug shows where)", sys.stderr
    )


def migration(done: api.Migration, settings: Settings) -> None:
    """What ``migrate`` did, and where."""
    if done.created_schema:
        say(f"created schema {settings.schema}")
    where = db.describe(settings.database_url)
    if settings.schema is not None:
        where += f" (schema {settings.schema})"
    if done.changed:
        say(f"{where}: migrated from {done.before or 'empty'} to {done.after}")
    else:
        say(f"{where}: already at revision {done.after}")


def migration_stopped(signal_name: str, code: int) -> None:
    """The error line of a migration a signal ends at once."""
    error(
        f"stopped by {signal_name}; the migration is rolled back: run `migrate` again",
        code,
    )


def sync_report(report: SyncReport, worker: bool = False) -> None:
    """Print what a sync did (the error line, if any, comes from etl.cli)."""
    lists = report.lists
    if worker:
        who = "worker on run"
        verb = "done (no list left)" if report.finished else "stopped"
    else:
        who = "run"
        verb = ("resumed, " if report.resumed else "") + (
            "finished" if report.finished else "stopped"
        )
    if report.closed_by_other == "abandoned":
        verb = "stopped: another `sync --restart` abandoned the run"
    say(
        f"{who} {report.run_id} of job {report.job!r} {verb} in {report.seconds:.1f} s: "
        f"{lists['total']} lists ({lists['done']} done, {lists['skipped']} skipped, "
        f"{lists['failed']} failed, {lists.get('held', 0)} held), "
        f"{report.pages} pages and {report.items} items stored, "
        f"{report.requests} requests ({report.retries} retried), "
        f"{report.edges_removed} edges marked removed"
    )
    _sync_details(report)


def _sync_details(report: SyncReport) -> None:
    """The lines under a sync's summary: odd answers, missing accounts, failures, holds."""
    lists = report.lists
    odd = {
        "malformed answers retried": report.malformed,
        "items quarantined": report.quarantined,
        "profile versions reused with other content": report.conflicts,
    }
    if any(odd.values()):
        say(
            "; ".join(f"{n} {what}" for what, n in odd.items() if n)
            + f" (see `status --job {report.job}`)"
        )
    # Counts and the first few: every one is in the run's checkpoints (status, last_error).
    where = f" (all in `status --job {report.job}`)"
    if report.missing_lists:
        shown = ", ".join(report.missing_accounts)
        say(
            f"{report.missing_lists} lists of accounts that do not exist (30003), skipped: "
            f"{shown}"
            + (" ..." if report.missing_lists > len(report.missing_accounts) else "")
            + where
        )
    for failure in report.failures:
        say(f"failed: {failure}")
    if report.failure_count > len(report.failures):
        say(f"failed: and {report.failure_count - len(report.failures)} more lists{where}")
    if lists.get("held"):
        say(
            f"{lists['held']} lists held for a mass removal: nothing of theirs removed "
            f"(see `status --job {report.job}`)"
        )


def listening(url: str) -> None:
    """The line that says a listener serves (a test or a supervisor may wait for it)."""
    log.info("listening on %s", url, extra={"event": "listening", "url": url})


def listen_report(report: api.ListenReport) -> None:
    """What a listener did, once it stopped."""
    say(
        f"listener at {report.url} stopped after {report.seconds:.1f} s: "
        f"{report.received} callbacks received, {report.acknowledged} acknowledged, "
        f"{report.rejected} refused, {report.unacknowledged} not acknowledged (503/500)"
    )


def no_unfinished_run(job: str) -> None:
    """What ``worker`` says when there is nothing to join."""
    say(f"job {job!r} has no unfinished run: nothing to do")


def status(job: str, doc: dict[str, Any]) -> None:
    """The status document of ``status`` as text."""
    run = doc["run"]
    if run is None:
        say(f"job {job!r} has no runs yet")
        return
    lists = run["lists"]
    say(f"job {job!r}, run {run['id']}: {run['status']}")
    say(f"  started   {run['started_at']}")
    say(f"  finished  {run['finished_at'] or '-'}")
    say(f"  last move {run['last_activity'] or '-'}")
    say(
        f"  lists     {lists['done']}/{lists['total']} done, {lists['skipped']} skipped, "
        f"{lists['failed']} failed, {lists['held']} held, {lists['running']} half done, "
        f"{lists['pending']} pending"
    )
    say(f"  stored    {run['pages']} pages, {run['items']} items, {run['requests']} requests")
    _reconciliation(run["reconciliation"])
    held = run["held"]
    if held["count"]:
        say(f"  held      {held['count']} lists: their crawl would remove most of their edges")
        for h in held["lists"]:
            kind = TYPE_NAMES.get(h["follow_type"], h["follow_type"])
            then = "a second crawl confirms it" if h["confirming"] else "not confirmed"
            say(f"    {h['account']}/{kind}: {h['removed']} of {h['current']} edges; {then}")
    for listed in run["errors"]:
        kind = TYPE_NAMES.get(listed["follow_type"], listed["follow_type"])
        say(f"  {listed['status']:8}  {listed['account']}/{kind}: {listed['error']}")
    quarantined = run["quarantined"]
    if quarantined["total"]:
        by_kind = quarantined["by_kind"]
        say(
            f"  quarantined {by_kind['unstorable']} unstorable items, {by_kind['conflict']} "
            "profile versions seen again with other content (table quarantined_items)"
        )
        for reason in quarantined["by_reason"][:10]:
            say(f"    {reason['count']:>6}  {reason['kind']}: {reason['reason']}")


def _reconciliation(live: dict[str, Any]) -> None:
    """The status lines of the run's reconciliation with the callbacks (`listen`); none where
    callbacks never changed anything (no listener)."""
    if not live["lists"] and not live["touched"]:
        return
    share = "-" if live["live_share"] is None else f"{live['live_share']:.1%}"
    say(
        f"  live      {live['lists']} lists reconciled: {live['live']} changes seen live, "
        f"drift {live['drift']} ({live['missed_added']} added, {live['missed_removed']} "
        f"removed by the crawl), {share} seen live"
    )
    say(f"  callbacks {live['touched']} lists changed since their last complete crawl")


def pruned(job: str | None, keep_runs: int, done: api.Pruned) -> None:
    """What ``prune`` deleted."""
    which = f"job {job!r}" if job is not None else "every job"
    say(
        f"pruned {which} to its last {keep_runs} runs: checkpoints of "
        f"{len(done.runs)} runs deleted ({done.checkpoints} rows), "
        f"{done.seen} sync_seen rows of ended runs"
    )


def events_pruned(before: str, deleted: int) -> None:
    """What ``prune-events`` deleted."""
    say(f"deleted {deleted} follow_edge_events observed before {before}")


def verification(result: results.Verification, as_json: bool) -> None:
    """A verification (and its repair), as text or as its JSON document."""
    if as_json:
        document(result.document())
        return
    _verify_report(result.report, "verified")
    if result.repaired:
        _repair(result.repaired)
        _verify_report(result.final, "re-verified the repaired lists of")


def _verify_report(report: results.VerifyReport, what: str) -> None:
    """The summary line of a verification, then what disagrees (capped)."""
    bad = report.disagree
    extra = ""
    if report.lists_not_checked:
        extra += f", {report.lists_not_checked} lists not checked (not crawled to the end)"
    if report.without_counts:
        extra += f", {report.without_counts} accounts without counts"
    state = "" if report.run_status == "done" else f" ({report.run_status})"
    say(
        f"{what} run {report.run_id}{state} of job {report.job!r} in {report.seconds:.1f} s: "
        f"{report.accounts} accounts, {report.lists} lists ({report.lists - bad} agree, "
        f"{bad} disagree){extra}, {report.missing} accounts do not exist "
        f"(30003), {report.requests} requests ({report.retries} retried)"
    )
    for mismatch in report.mismatches[:VERIFY_SHOWN]:
        say(f"disagrees: {mismatch.describe()}")
    if bad > min(len(report.mismatches), VERIFY_SHOWN):
        shown = min(len(report.mismatches), VERIFY_SHOWN)
        say(f"disagrees: and {bad - shown} more (all in table verify_mismatches)")
    for label, names, total in (
        ("accounts that do not exist (30003)", report.missing_accounts, report.missing),
        (
            "no counts for",
            [f"{a} ({why})" for a, why in report.unchecked],
            report.without_counts,
        ),
    ):
        if names:
            shown_names = names[:VERIFY_SHOWN]
            more = total - len(shown_names)
            say(f"{label}: {', '.join(shown_names)}" + (f" and {more} more" if more > 0 else ""))


def _repair(repaired: results.RepairReport) -> None:
    """One line for the repair's runs (one per set of disagreeing follow types)."""
    runs = repaired.syncs
    ids = [run.run_id for run in runs]
    which = f"run {ids[0]}" if len(ids) == 1 else f"{len(ids)} runs ({ids[0]}-{ids[-1]})"
    total = {key: sum(run.lists[key] for run in runs) for key in ("total", "done", "skipped")}
    failed = total["total"] - total["done"] - total["skipped"]
    say(
        f"repair: {which} of job {repaired.job!r} re-crawled {total['total']} lists "
        f"({total['done']} done, {total['skipped']} skipped, {failed} failed or left), "
        f"{sum(run.requests for run in runs)} requests, "
        f"{sum(run.edges_removed for run in runs)} edges marked removed"
    )


def report_written(out: Path, job: str | None, data: ReportData) -> None:
    """Where ``report`` wrote, and the headline figures."""
    scope = f"job {job!r}" if job else "all jobs"
    say(
        f"report written to {out}: {data.accounts:,} accounts, "
        f"{sum(data.edges.values()):,} current edges, {data.runs_total:,} runs ({scope})"
    )


def usersig(sig: str) -> None:
    """The UserSig ``usersig`` made."""
    print(sig)  # the one command whose output is a credential, on purpose


def sandbox_ready(
    url: str, args: Any, settings: Settings, graph: Graph, config: SandboxConfig
) -> None:
    """What ``sandbox`` says once it serves: where, what it simulates, how to point at it."""
    key = "$IM_SECRET_KEY" if settings.secret_key else config.secret_key
    say(f"sandbox: {args.users} users (seed {args.seed}) at {url}; Ctrl-C stops it")
    if args.hostile or config.loop_accounts or args.fault_kinds:
        kinds = ",".join(config.fault_kinds)
        loops = ",".join(config.loop_accounts) or "none"
        say(f"  hostile {args.hostile}, fault kinds {kinds}, looping accounts {loops}")
    if graph.big_accounts:
        big = ", ".join(f"{a} +{n}" for a, n in graph.big_accounts.items())
        say(f"  big lists (synthetic fans): {big}")
    say(f"  export IM_BASE_URL={url} IM_SDKAPPID={config.sdkappid} IM_ADMIN={config.admin}")
    if not settings.secret_key:
        say(f"  export IM_SECRET_KEY={key}   # the sandbox's public default key")
    say(f"  accounts: curl -s {url}/sandbox/accounts")
    hook = config.webhook
    if hook.url is not None:
        signed = "signed" if hook.token is not None else "unsigned (no IM_CALLBACK_TOKEN)"
        faults = f"drops {hook.drops:g}, duplicates {hook.duplicates:g}, reorder {hook.reorder}"
        delay = "-".join(f"{ms:g}" for ms in hook.delay_ms)
        say(f"  webhook: callbacks to {hook.url}, {signed}; {faults}, delay {delay} ms")
        say(f"  what became of them: curl -s {url}/sandbox/webhook")
    sys.stdout.flush()


def demo_started(demo: api.Demo, users: int) -> None:
    """The demo's first lines: its database, and its sandbox."""
    say(f"database: {demo.database} (migrated)")
    changed = f" (graph changed {demo.earlier}x, once per earlier demo run)" if demo.earlier else ""
    say(f"sandbox: {users} users at {demo.url}{changed}")


def demo_summary(store: api.StoreSummary) -> None:
    """What the store holds after the demo's crawl, and what that run changed."""
    say(f"accounts with edges: {store.accounts}")
    for follow_type, name in TYPE_NAMES.items():
        say(f"  {name:8} {store.edges.get(follow_type, 0):>9} edges")
    say(f"profiles: {store.profiles} users, {store.snapshots} snapshots")
    say(
        f"changes seen by this run: {store.added} edges added, "
        f"{store.removed} removed (follow_edge_events; the first run is the baseline)"
    )


def demo_live(live: LiveFollow, listener: str) -> None:
    """The demo's live follow: who followed whom, and when the tables held it."""
    back = " (a follow-back: now a mutual pair)" if live.mutual else ""
    say(
        f"live: {live.account} follows {live.to_account}{back}; the sandbox posted "
        f"Follow.CallbackAfterFollowAdd to the listener at {listener}"
    )
    if live.seconds is None:
        say(f"  not in the tables {live.edges} edges strong after 5 s: see the listener's log")
    else:
        say(f"  in the tables {live.seconds:.2f} s later: {live.edges} edges current")


def demo_reconciliation(report: SyncReport, status: dict[str, Any]) -> None:
    """The sync after the live follow, and its reconciliation with the callbacks (from the
    status document of its job)."""
    found = status["run"]["reconciliation"]
    share = "-" if found["live_share"] is None else f"{found['live_share']:.0%}"
    say(
        f"next sync (run {report.run_id}, job {report.job}, those 2 accounts): "
        f"{found['live']} changes seen live, {found['missed_added']} added and "
        f"{found['missed_removed']} removed by the crawl (drift {found['drift']}), "
        f"live share {share}"
    )


def demo_end(seconds: float) -> None:
    """The demo's last lines."""
    say(f"time: {seconds:.1f} s")
    say("next: python -m etl report --out report.html, then open report.html")
