"""The hand-listed columns downstream of etl.store.schema keep up with it: each analyst view
that mirrors a table shows every column of that table, and each dbt staging model selects
every column of the source it reads, on a migrated SQLite and PostgreSQL database. A column
left out on purpose is named here with the reason, so adding one to a table fails until the
views (a migration) and the models (dbt/models/staging/) show it or this file says why not."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from etl.store.meta import metadata
from etl.store.schema import follow_edges, profile_snapshots

STAGING = Path(__file__).resolve().parents[2] / "dbt" / "models" / "staging"
SOURCE = re.compile(r"\{\{\s*source\(\s*'(\w+)'\s*,\s*'(\w+)'\s*\)\s*\}\}")
ALIAS = re.compile(r"\bas\s+(\w+)$", re.IGNORECASE)
NAME = re.compile(r"\w+")


@dataclass(frozen=True)
class Mirror:
    """A view meant to show every column of the table it reads but ``left_out``."""

    name: str
    source: str
    left_out: Mapping[str, str] = field(default_factory=dict)  # column -> why it is not shown


# The views (migrations/versions/) that mirror a table of etl.store.schema.
VIEWS = [
    Mirror("current_profiles", profile_snapshots.name),
    Mirror(
        "current_follow_edges",
        follow_edges.name,
        {
            "removed_at": "the view holds only edges still listed: it is always null there",
            "changed_at": "bookkeeping: a crawl that began earlier must not undo a newer change",
        },
    ),
]
# The other views aggregate (their columns are not a table's); the models over them are checked.
AGGREGATES = {"follows", "account_follow_counts", "daily_follow_changes", "run_reconciliation"}
# What each staging model leaves out of its source.
MODELS_LEAVE_OUT = {
    "stg_current_profiles": {"content_digest": "bookkeeping for the sync (the model says so)"},
}


def missing(
    shown: Iterable[str], mirrored: Iterable[str], left_out: Mapping[str, str]
) -> list[str]:
    """The columns of ``mirrored`` that ``shown`` lacks and ``left_out`` does not explain, and
    the ``left_out`` entries that are not columns of ``mirrored`` (a stale excuse), sorted."""
    columns = set(mirrored)
    gaps = columns - set(shown) - set(left_out)
    stale = {f"{name} (left out, but not a column)" for name in set(left_out) - columns}
    return sorted(gaps | stale)


def select_list(sql: str) -> list[str]:
    """The items of a model's one top-level ``select ... from``, split at top-level commas."""
    body = re.sub(r"--[^\n]*", "", sql)
    match = re.search(r"\bselect\b(.*?)\bfrom\b", body, re.IGNORECASE | re.DOTALL)
    assert match, "no select ... from"
    items: list[str] = []
    depth, quoted, start, text = 0, False, 0, match.group(1)
    for i, char in enumerate(text):
        quoted ^= char == "'"  # a doubled quote inside a string toggles twice
        depth += 0 if quoted else {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0 and not quoted:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [" ".join(item.split()) for item in items]


def model_columns(sql: str) -> tuple[str, list[str]]:
    """(the source a dbt model reads, the names of the columns it selects)."""
    sources = SOURCE.findall(sql)
    assert len(sources) == 1, f"expected one {{{{ source(...) }}}}, found {sources}"
    names = []
    for item in select_list(sql):
        alias = ALIAS.search(item)
        name = alias.group(1) if alias else item
        assert NAME.fullmatch(name), f"name the column {item!r} with `as`"
        names.append(name.lower())
    return sources[0][1], names


def models() -> dict[str, str]:
    """Each staging model's name and SQL."""
    return {path.stem: path.read_text() for path in sorted(STAGING.glob("*.sql"))}


def columns_of(engine: sa.Engine, relation: str) -> list[str]:
    """The columns of a table or view as the database reports them."""
    return [column["name"] for column in sa.inspect(engine).get_columns(relation)]


def test_every_view_is_a_mirror_or_an_aggregate(engine: sa.Engine) -> None:
    """A new view must be declared here, as a mirror of a table or as an aggregate."""
    declared = {view.name for view in VIEWS} | AGGREGATES
    assert set(sa.inspect(engine).get_view_names()) == declared


def test_each_view_shows_every_column_of_its_table(engine: sa.Engine) -> None:
    """A view that mirrors a table shows each of its columns, in its order, and nothing else
    (PostgreSQL expands ``p.*`` when the view is made: a migration that adds a column must make
    the view again)."""
    for view in VIEWS:
        table = metadata.tables[view.source].columns.keys()
        shown = columns_of(engine, view.name)
        assert missing(shown, table, view.left_out) == [], view.name
        assert shown == [c for c in table if c not in view.left_out], f"{view.name}: extra columns"


def test_each_staging_model_selects_every_column_of_its_source(engine: sa.Engine) -> None:
    """Each dbt staging model lists every column of the view (or table) it reads."""
    gaps = {}
    for model, sql in models().items():
        source, names = model_columns(sql)
        gaps[model] = missing(names, columns_of(engine, source), MODELS_LEAVE_OUT.get(model, {}))
    assert {model: columns for model, columns in gaps.items() if columns} == {}


def test_every_model_that_leaves_something_out_exists() -> None:
    """No excuse is kept for a model that is gone."""
    assert set(MODELS_LEAVE_OUT) <= set(models())


def test_the_checker_reports_a_column_left_out() -> None:
    """A list lacking one column of its table, or excusing one the table lacks, is reported."""
    table = list(profile_snapshots.columns.keys())
    assert missing(table, table, {}) == []
    assert missing([c for c in table if c != "nick"], table, {}) == ["nick"]
    assert missing(table, table, {"gone": "why"}) == ["gone (left out, but not a column)"]


def test_the_parser_reads_a_model_like_dbt_renders_it() -> None:
    """Comments, aliases, expressions with commas inside parentheses and the source name are
    read the way the database would (a model missing a column is caught through them)."""
    sql = """-- a comment, with a comma
    select
        user_id,
        coalesce(nick, ',') as nick,  -- renamed in place
        case level when 1 then 'one' end
            as level_name,
        in_list = 1 as in_list
    from {{ source('follow_etl', 'current_profiles') }}
    """
    source, names = model_columns(sql)
    assert source == "current_profiles"
    assert names == ["user_id", "nick", "level_name", "in_list"]
    assert "profile_sequence" in missing(names, profile_snapshots.columns.keys(), {})
