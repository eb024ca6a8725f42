"""Migrations are the schema authority: they build it from empty, undo it, and match etl.schema."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import URL

from etl.store import db
from etl.store.schema import SCHEMA_REVISION

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
}
VIEWS = {
    "current_follow_edges",
    "current_profiles",
    "follows",
    "account_follow_counts",
    "daily_follow_changes",
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
        db.upgrade(engine)
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
