"""What the PostgreSQL source checks make of tables without a primary key: refused with one
line naming both fixes unless REPLICA IDENTITY FULL (keyless) or USING INDEX (keyed by the
index); `headwater snapshot` refuses a keyless table; the key a Relation message gives under
FULL is still the primary key."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from headwater.config import ConfigError, TaskConfig
from headwater.resnapshot import request_snapshot
from producers.errors import SourceError
from producers.postgres import catalog
from producers.postgres.pgoutput import Relation, RelationColumn
from schemas.tables import TableId

pytestmark = pytest.mark.integration

TABLES = """
CREATE TABLE keyed (id int PRIMARY KEY, v text);
CREATE TABLE loose (a int, b text);
ALTER TABLE loose REPLICA IDENTITY FULL;
CREATE TABLE coded (code text NOT NULL, v int);
CREATE UNIQUE INDEX coded_code ON coded (code);
ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code;
CREATE TABLE keyed_full (id int PRIMARY KEY, v text);
ALTER TABLE keyed_full REPLICA IDENTITY FULL;
"""


def test_keyless_table_without_full_is_refused_naming_both_fixes(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task()
    with psycopg.connect(task.source.url, autocommit=True) as conn:
        conn.execute(TABLES)
        conn.execute("CREATE TABLE bare (a int)")
        with pytest.raises(SourceError) as refused:
            catalog.check_source_ready(conn, task)
    message = str(refused.value)
    assert "\n" not in message
    assert "without a primary key: public.bare " in message
    assert "add a primary key" in message
    assert "ALTER TABLE <table> REPLICA IDENTITY FULL" in message


def test_keys_of_full_and_index_identities(make_task: Callable[..., TaskConfig]) -> None:
    task = make_task()
    with psycopg.connect(task.source.url, autocommit=True) as conn:
        conn.execute(TABLES)
        conn.execute("CREATE TABLE nothing (id int PRIMARY KEY)")
        conn.execute("ALTER TABLE nothing REPLICA IDENTITY NOTHING")
        keys = {
            name: catalog.table_key(conn, TableId("public", name))
            for name in ("keyed", "loose", "coded", "keyed_full", "nothing")
        }
        task = make_task(tables={"exclude": ["public.nothing"]})
        selected = catalog.check_source_ready(conn, task)
        types = catalog.TypeResolver(conn)
        oid = {
            name: conn.execute("SELECT %s::regclass::oid", (f"public.{name}",)).fetchone()[0]
            for name in ("keyed_full", "loose")
        }
        # Under FULL, pgoutput flags every column as identity: the key stays the primary key.
        flagged = (RelationColumn("id", 23, -1, True), RelationColumn("v", 25, -1, True))
        keyed_full = catalog.schema_from_relation(
            conn, Relation(oid["keyed_full"], "public", "keyed_full", "f", flagged), types
        )
        flagged = (RelationColumn("a", 23, -1, True), RelationColumn("b", 25, -1, True))
        loose = catalog.schema_from_relation(
            conn, Relation(oid["loose"], "public", "loose", "f", flagged), types
        )
    assert keys == {
        "keyed": ("id",),
        "loose": (),
        "coded": ("code",),
        "keyed_full": ("id",),
        "nothing": None,
    }
    assert len(selected) == 4
    assert keyed_full.primary_key == ("id",) and loose.primary_key == ()


def test_snapshot_of_a_keyless_table_is_refused(make_task: Callable[..., TaskConfig]) -> None:
    task = make_task()
    with psycopg.connect(task.source.url, autocommit=True) as conn:
        conn.execute(TABLES)
    with pytest.raises(ConfigError, match=r"^public\.loose: no primary key, .* add a primary key"):
        request_snapshot(task, ["public.loose", "public.keyed"])
