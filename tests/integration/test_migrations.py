"""Migrations are the schema authority: they build it from empty, undo it, and match etl.schema."""

from __future__ import annotations

from datetime import UTC, datetime
from types import ModuleType

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from etl.store import db
from etl.store.load import Loader
from etl.store.schema import SCHEMA_REVISION, profile_snapshots
from etl.tencent.page import Page
from etl.tencent.profile import profile_row
from etl.tencent.rows import PageRows, Profile

NOW = datetime(2026, 1, 1, tzinfo=UTC)

TABLES = {
    "follow_edges",
    "profile_snapshots",
    "sync_runs",
    "sync_checkpoints",
    "sync_seen",
    "sync_workers",
    "follow_lists",
    "follow_edge_events",
    "quarantined_items",
    "sync_run_counters",
    "verify_mismatches",
    "live_pairs",
    "list_reconciliation",
}
VIEWS = {
    "current_follow_edges",
    "current_profiles",
    "follows",
    "account_follow_counts",
    "daily_follow_changes",
    "run_reconciliation",
}


def names(engine: sa.Engine) -> tuple[set[str], set[str]]:
    """The tables and views in the database."""
    inspector = sa.inspect(engine)
    return set(inspector.get_table_names()) - {"alembic_version"}, set(inspector.get_view_names())


def test_upgrade_downgrade_upgrade(db_url: URL) -> None:
    """From empty to head, back to empty, and to head again, with tables and views each time."""
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine)
        assert names(engine) == (TABLES, VIEWS)
        assert db.current_revision(engine) == db.head_revision()
        db.downgrade(engine, "base")
        assert names(engine) == (set(), set())
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        assert names(engine) == (TABLES, VIEWS)
    finally:
        engine.dispose()


def test_the_code_expects_the_newest_migration() -> None:
    """etl.store.schema.SCHEMA_REVISION names the head revision, so `sync` checks the right one."""
    assert db.head_revision() == SCHEMA_REVISION


def test_no_drift_between_models_and_migrations(engine: sa.Engine) -> None:
    """`alembic check` finds nothing to generate after upgrading to head."""
    with engine.connect() as conn:
        command.check(db.alembic_config(conn))


def test_current_profiles_picks_the_highest_sequence(engine: sa.Engine) -> None:
    """The view shows, per user, the snapshot with the highest profile_sequence."""
    rows: list[dict[str, object]] = [
        {"user_id": "u", "profile_sequence": seq, "nick": f"n{seq}", "tags": {}}
        for seq in (3, 10, 7)
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO profile_snapshots (user_id, profile_sequence, nick, tags, "
                "first_seen_at) VALUES (:user_id, :profile_sequence, :nick, '{}', "
                "CURRENT_TIMESTAMP)"
            ),
            rows,
        )
        current = conn.execute(
            sa.text("SELECT user_id, profile_sequence, nick FROM current_profiles")
        ).all()
    assert [tuple(row) for row in current] == [("u", 10, "n10")]


def test_0003_keeps_the_rows_of_a_0002_store(db_url: URL) -> None:
    """Upgrading a store with profiles keeps them (their sequence now NUMERIC on PostgreSQL,
    no digest yet) and current_profiles gains the new columns; downgrading keeps them too."""
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine, "0002")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO profile_snapshots (user_id, profile_sequence, nick, tags, "
                    "first_seen_at) VALUES ('u', 9223372036854775807, 'n', "
                    """'{"Tag_Profile_IM_Nick": "n"}', CURRENT_TIMESTAMP)"""
                )
            )
        db.upgrade(engine, "0009")  # 0010 computes the digest (below)
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT profile_sequence, nick, tags_raw, content_digest FROM current_profiles"
                )
            ).one()
        assert tuple(row) == (2**63 - 1, "n", None, None)
        db.downgrade(engine, "0002")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT profile_sequence FROM current_profiles")).all() == [
                (2**63 - 1,)
            ]
    finally:
        engine.dispose()


def test_0010_gives_every_profile_version_its_digest(db_url: URL) -> None:
    """A version stored before 0003 (no digest) gets the loader's digest of its tags, in
    batches and past SQLite's INTEGER range: a second sighting with the same content is then
    no conflict, and one with other content is."""
    engine = db.make_engine(db_url)
    item = [
        {"Tag": "Tag_Profile_IM_Nick", "Value": "n"},
        {"Tag": "Tag_Profile_IM_Level", "Value": 3},
    ]
    sequences = [*range(1, migration_0010().BATCH + 2), 2**64 - 1]  # more than one batch
    try:
        db.upgrade(engine, "0009")
        with engine.begin() as conn:
            conn.execute(
                sa.insert(profile_snapshots),
                [
                    {"user_id": f"u{n % 3}", "profile_sequence": n, "nick": "n",
                     "tags": {"Tag_Profile_IM_Nick": "n", "Tag_Profile_IM_Level": 3},
                     "first_seen_at": NOW}
                    for n in sequences
                ],
            )  # fmt: skip
        db.upgrade(engine)
        with engine.connect() as conn:
            digests = conn.execute(sa.select(profile_snapshots.c.content_digest)).scalars().all()
        assert digests == [profile_row("u", 1, item)[-1]] * len(sequences)
        page = Page.of([{"To_Account": "u1"}], "")
        same = PageRows(profiles=[Profile(profile_row("u1", 1, item), page, 0, 0)])
        other = PageRows(profiles=[Profile(profile_row("u1", 1, item[:1]), page, 0, 0)])
        with engine.begin() as conn:
            loader = Loader(engine.dialect.name)
            assert loader.write(conn, 1, [], [(("u1", 1), same)], NOW).conflicts == 0
            assert loader.write(conn, 1, [], [(("u1", 1), other)], NOW).conflicts == 1
    finally:
        engine.dispose()


def migration_0010() -> ModuleType:
    """The module of migration 0010, as alembic loaded it."""
    script = ScriptDirectory.from_config(db.alembic_config())
    revision = script.get_revision("0010")
    assert revision is not None
    module: ModuleType = revision.module
    return module
