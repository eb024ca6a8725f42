"""A fresh PostgreSQL database per case, and what the bench reads from it afterwards.

Write figures come from the server's own counters: ``pg_stat_user_tables`` (rows inserted,
updated, deleted; dead tuples) once the sync's backends have exited and flushed their stats,
and WAL positions. The server is shared, so the WAL of other databases would count too: when
``pg_walinspect`` can be installed in the bench database, only the records that touch this
database's relations are summed, and a temporary replication slot keeps those records on disk
until they are read. Otherwise the plain LSN difference is reported, marked "cluster".
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from etl.config import database_url
from etl.sandbox.admin import list_digest

TABLES = ("follow_edges", "profile_snapshots")


@dataclass(frozen=True)
class TableStats:
    """Cumulative write counters and tuple counts of one table."""

    inserted: int
    updated: int
    deleted: int
    live: int
    dead: int


@dataclass(frozen=True)
class WalPart:
    """The WAL records of one relation and record type: how many, bytes, of them full-page
    images."""

    relation: str
    kind: str
    records: int
    bytes: int
    fpi: int


def wal_summary(parts: list[WalPart], lists: int, top: int = 6) -> list[str]:
    """Detail lines: bytes a list by relation (its record types, full-page images), biggest
    first, and the total."""
    by_rel: dict[str, list[WalPart]] = defaultdict(list)
    for part in parts:
        by_rel[part.relation].append(part)
    ranked = sorted(by_rel.items(), key=lambda kv: -sum(p.bytes for p in kv[1]))
    n = max(lists, 1)
    total = sum(p.bytes for p in parts)
    fpi = sum(p.fpi for p in parts)
    lines = [
        f"WAL by relation, bytes/list ({lists} lists): total {total / n:.0f}, "
        f"of which full-page images {fpi / n:.0f}"
    ]
    for relation, rel_parts in ranked[:top]:
        size = sum(p.bytes for p in rel_parts)
        images = sum(p.fpi for p in rel_parts)
        kinds = ", ".join(
            f"{p.kind.split('/', 1)[1]} {p.records}x{p.bytes / max(p.records, 1):.0f} B"
            for p in sorted(rel_parts, key=lambda p: -p.bytes)[:3]
        )
        lines.append(f"  {relation}: {size / n:.0f} (FPI {images / n:.0f}; {kinds})")
    rest = sum(sum(p.bytes for p in ps) for _, ps in ranked[top:])
    if rest:
        lines.append(f"  {len(ranked) - top} other relations: {rest / n:.0f}")
    return lines


class PgServer:
    """The server the bench creates its databases on."""

    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        self.engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")

    def version(self) -> str:
        """The server's version, e.g. "15.20"."""
        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar_one()).split()[0]

    def backend_pid(self) -> int:
        """The server-side pid of one of our connections (to find the server's processes)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())

    def create_database(self) -> BenchDatabase:
        """A new, empty database (the caller drops it)."""
        name = f"follow_etl_bench_{uuid.uuid4().hex[:10]}"
        with self.engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        return BenchDatabase(self, name)

    def dispose(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()


class BenchDatabase:
    """One case's database: its URL for the CLI, and an observer connection for the bench."""

    def __init__(self, server: PgServer, name: str) -> None:
        self.server = server
        self.name = name
        self.url = server.url.set(database=name)
        self.engine = sa.create_engine(
            self.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )
        self._slot_holder: sa.Connection | None = None
        self._slot = f"bench_{uuid.uuid4().hex[:12]}"
        self._own_pids = [0]  # backends of this bench that settle() must not wait for
        self._walinspect: bool | None = None
        with self.engine.connect() as conn:
            self.oid = int(
                conn.execute(
                    sa.text("SELECT oid FROM pg_database WHERE datname = current_database()")
                ).scalar_one()
            )

    @property
    def own_pids(self) -> list[int]:
        """Server pids of the bench's own long-lived connections to this database."""
        return [pid for pid in self._own_pids if pid]

    @property
    def env_url(self) -> str:
        """DATABASE_URL for the CLI."""
        return self.url.render_as_string(hide_password=False)

    def drop(self) -> None:
        """Drop the database (closing the bench's own connection first)."""
        if self._slot_holder is not None:
            self._slot_holder.close()
            self._slot_holder = None
        self.engine.dispose()
        with self.server.engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    # ---- state the CLI leaves behind ----------------------------------------------------

    def run_is_running(self, job: str) -> bool:
        """True once the job has an unfinished run (a worker has something to join)."""
        try:
            with self.engine.connect() as conn:
                found = conn.execute(
                    sa.text("SELECT 1 FROM sync_runs WHERE job = :job AND status = 'running'"),
                    {"job": job},
                ).first()
        except sa.exc.SQLAlchemyError:
            return False  # not migrated yet, or the table is being created
        return found is not None

    def lists_finished(
        self, job: str, lists: list[tuple[str, int]]
    ) -> dict[tuple[str, int], float]:
        """Seconds from the start of the job's latest run to the last write of each of these
        lists' checkpoints (the list's end, once it is done), for the lists that are done."""
        query = sa.text(
            "SELECT c.account, c.follow_type, "
            "CAST(extract(epoch FROM c.updated_at - r.started_at) AS float) "
            "FROM sync_checkpoints c JOIN sync_runs r ON r.id = c.run_id "
            "WHERE r.id = (SELECT max(id) FROM sync_runs WHERE job = :job) "
            "AND c.status = 'done' AND c.account = ANY(:accounts)"
        )
        wanted = set(lists)
        with self.engine.connect() as conn:
            rows = conn.execute(query, {"job": job, "accounts": [a for a, _ in lists]}).all()
        return {(a, t): float(s) for a, t, s in rows if (a, t) in wanted}

    def run_seconds(self, job: str) -> float | None:
        """started_at to finished_at of the job's latest run (None while unfinished)."""
        query = sa.text(
            "SELECT CAST(extract(epoch FROM finished_at - started_at) AS float) "
            "FROM sync_runs WHERE job = :job ORDER BY id DESC LIMIT 1"
        )
        with self.engine.connect() as conn:
            value = conn.execute(query, {"job": job}).scalar()
        return None if value is None else float(value)

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until no other session uses the database, so their statistics are flushed."""
        deadline = time.monotonic() + timeout
        query = sa.text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND pid <> ALL(:ours)"
        )
        with self.engine.connect() as conn:
            while (
                conn.execute(query, {"ours": self._own_pids}).scalar_one()
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)

    def table_stats(self) -> dict[str, TableStats]:
        """Counters of follow_edges and profile_snapshots, after the other sessions ended."""
        self.settle()
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            rows = conn.execute(
                sa.text(
                    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_live_tup, n_dead_tup "
                    "FROM pg_stat_user_tables WHERE relname IN :names"
                ).bindparams(sa.bindparam("names", expanding=True)),
                {"names": list(TABLES)},
            ).all()
        found = {row[0]: TableStats(*(int(v) for v in row[1:])) for row in rows}
        empty = TableStats(0, 0, 0, 0, 0)
        return {name: found.get(name, empty) for name in TABLES}

    # ---- WAL ----------------------------------------------------------------------------

    def wal_mark(self) -> str:
        """The current WAL position, with the WAL from here on kept until the next mark."""
        if self._walinspect is None:
            self._walinspect = self._setup_walinspect()
        if self._walinspect and self._slot_holder is not None:
            holder = self._slot_holder
            holder.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": self._slot})
            holder.execute(
                sa.text("SELECT pg_create_physical_replication_slot(:s, true, true)"),
                {"s": self._slot},
            )
        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT pg_current_wal_flush_lsn()")).scalar_one())

    def wal_bytes(self, start: str) -> tuple[int, str]:
        """WAL written since ``start``: (bytes, "database" or "cluster")."""
        with self.engine.connect() as conn:
            end = str(conn.execute(sa.text("SELECT pg_current_wal_flush_lsn()")).scalar_one())
            if self._walinspect:
                try:
                    total = conn.execute(
                        sa.text(
                            "SELECT coalesce(sum(record_length), 0) "
                            "FROM pg_get_wal_records_info(CAST(:a AS pg_lsn), CAST(:b AS pg_lsn)) "
                            "WHERE block_ref ~ :pattern"
                        ),
                        {"a": start, "b": end, "pattern": f"rel [0-9]+/{self.oid}/"},
                    ).scalar_one()
                    return int(total), "database"
                except sa.exc.SQLAlchemyError:
                    pass  # records already recycled, or no permission: fall back
            diff = conn.execute(
                sa.text("SELECT pg_wal_lsn_diff(CAST(:b AS pg_lsn), CAST(:a AS pg_lsn))"),
                {"a": start, "b": end},
            ).scalar_one()
        return int(diff), "cluster"

    def wal_by_relation(self, start: str) -> list[WalPart]:
        """The database's WAL since ``start`` by relation (the first block a record names:
        a table, an index, or a fork of one) and record type, biggest first; empty when
        pg_walinspect is not available. Records that name no block (commits) are not in it,
        nor in ``wal_bytes``."""
        if not self._walinspect:
            return []
        query = sa.text(
            "WITH r AS (SELECT resource_manager || '/' || record_type AS kind, record_length, "
            "fpi_length, substring(block_ref FROM :pattern) AS node, "
            "coalesce(substring(block_ref FROM 'blkref #0: rel [0-9/]+ fork ([a-z]+)'), 'main') "
            "AS fork "
            "FROM pg_get_wal_records_info(CAST(:a AS pg_lsn), pg_current_wal_flush_lsn())) "
            "SELECT coalesce(c.relname, 'filenode ' || r.node) "
            "|| CASE WHEN r.fork = 'main' THEN '' ELSE ' (' || r.fork || ')' END, "
            "r.kind, count(*), sum(r.record_length), sum(r.fpi_length) "
            "FROM r LEFT JOIN pg_class c ON c.oid = pg_filenode_relation(0, CAST(r.node AS oid)) "
            "WHERE r.node IS NOT NULL GROUP BY 1, 2 ORDER BY 4 DESC"
        )
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    query, {"a": start, "pattern": f"^blkref #0: rel [0-9]+/{self.oid}/([0-9]+)"}
                ).all()
        except sa.exc.SQLAlchemyError:
            return []
        return [WalPart(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]

    def checkpoint(self) -> bool:
        """CHECKPOINT, so that the next phase pays the full-page image of every page it
        touches (as a daily re-sync does, long after the last checkpoint), not a share that
        depends on when the server last checkpointed. False when not allowed."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("CHECKPOINT"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def checkpoints(self) -> int:
        """Checkpoints the server has made so far (timed and requested): one during a phase
        adds full-page images of the pages it touches again."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
                ).scalar_one()
            )

    def _setup_walinspect(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_walinspect"))
            # AUTOCOMMIT: a holder idle in a transaction held the database's xmin horizon
            # back for the whole case, and every sync measured beside it ran slower.
            holder = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            self._own_pids.append(int(pid))
            holder.execute(
                sa.text("SELECT pg_create_physical_replication_slot(:s, true, true)"),
                {"s": self._slot},
            )
        except sa.exc.SQLAlchemyError:
            return False
        self._slot_holder = holder
        return True

    # ---- ground truth -------------------------------------------------------------------

    def stored_lists(
        self, accounts: Iterable[str], types: Iterable[int]
    ) -> dict[str, list[tuple[str, int]]]:
        """``"account/type"`` -> (to_account, follow time in Unix seconds) of the current edges."""
        lists: dict[str, list[tuple[str, int]]] = defaultdict(list)
        query = sa.text(
            "SELECT account, follow_type, to_account, "
            "CAST(extract(epoch FROM follow_time) AS bigint) "
            "FROM current_follow_edges "
            "WHERE account = ANY(:accounts) AND follow_type = ANY(:types)"
        )
        with self.engine.connect() as conn:
            result = conn.execute(query, {"accounts": list(accounts), "types": list(types)})
            for account, follow_type, to_account, at in result:
                lists[f"{account}/{follow_type}"].append((to_account, -1 if at is None else at))
        return lists


def digests(lists: dict[str, list[tuple[str, int]]]) -> dict[str, tuple[int, str]]:
    """``"account/type"`` -> (count, digest) as the sandbox's truth-digest route computes them."""
    return {key: (len(pairs), list_digest(pairs)) for key, pairs in lists.items()}
