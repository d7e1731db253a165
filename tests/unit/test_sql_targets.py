"""Pure parts of the heterogeneous sinks: finding refused records by bisection, the origin of
each net change, the partitions a stopped table keeps, and the documented column types of the
MariaDB and SQLite targets (docs/type-mapping.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from sqlalchemy.dialects import mysql, sqlite

from consumers.batch import SinkRecord, TableChanges, Upsert, collapse
from consumers.mysql_target import MySqlTarget
from consumers.outcome import isolate_refused, without_stopped
from consumers.sqlite_target import SqliteTarget, sqlite_text
from schemas.envelope import ChangeEvent, SourceInfo
from schemas.tables import Column, TableId, TableSchema

T = TableId("public", "t")
SCHEMA = TableSchema(T, (Column("id", "int4", "integer", nullable=False),), ("id",))


class Refused(Exception):
    pass


def changes_of(keys: range, truncated: bool = False) -> TableChanges:
    changes = TableChanges(SCHEMA, truncated)
    for k in keys:
        changes.changes[(k,)] = Upsert({"id": k}, frozenset({"id"}))
        changes.origins[(k,)] = ("top", 0, k)
    return changes


def test_bisection_finds_each_refused_record_and_applies_the_rest() -> None:
    bad = {(7,), (500,), (501,)}
    applied: list[tuple[int, ...]] = []
    attempts = 0

    def attempt(part: TableChanges) -> None:
        nonlocal attempts
        attempts += 1
        if bad & set(part.changes):
            raise Refused("no")
        applied.extend(part.changes)

    rejected = isolate_refused(
        changes_of(range(1000)), attempt, lambda e: isinstance(e, Refused), str
    )
    assert {r.key for r in rejected} == bad
    assert {r.origin for r in rejected} == {("top", 0, 7), ("top", 0, 500), ("top", 0, 501)}
    assert sorted(applied) == [(k,) for k in range(1000) if (k,) not in bad]
    assert attempts < 3 * 2 * 11  # about 2 * log2(n) per refused record, not n


def test_bisection_keeps_the_truncate_first_and_passes_other_errors() -> None:
    seen: list[tuple[bool, int]] = []

    def attempt(part: TableChanges) -> None:
        seen.append((part.truncated, len(part.changes)))
        if (3,) in part.changes:
            raise Refused("no")

    isolate_refused(changes_of(range(4), truncated=True), attempt, lambda e: True, str)
    truncates = [n for t, n in seen if t]
    assert all(n <= 4 for n in truncates) and seen[1] == (True, 2)

    def broken(part: TableChanges) -> None:
        raise RuntimeError("target gone")

    with pytest.raises(RuntimeError):
        isolate_refused(changes_of(range(4)), broken, lambda e: isinstance(e, Refused), str)


def test_each_net_change_remembers_its_last_event_and_topic() -> None:
    source = SourceInfo("postgresql", "t", "db", T, 1)
    records = [
        SinkRecord("p.public.t", 0, 10, SCHEMA, ChangeEvent("c", source, None, {"id": 1})),
        SinkRecord("p.public.t", 0, 11, SCHEMA, ChangeEvent("u", source, None, {"id": 1})),
        SinkRecord("p.public.t", 0, 12, SCHEMA, ChangeEvent("d", source, {"id": 2}, None)),
        SinkRecord("p.other.x", 0, 3),
    ]
    batch = collapse(records)
    assert batch.tables[T].origins == {(1,): ("p.public.t", 0, 11), (2,): ("p.public.t", 0, 12)}
    kept = without_stopped(batch, {T: "stopped"})
    assert list(kept) == [("p.other.x", 0)]


def _ddl(dialect_types: object, col: Column, in_key: bool = False) -> str:
    target = dialect_types
    assert isinstance(target, MySqlTarget | SqliteTarget)
    compiler = mysql.dialect() if isinstance(target, MySqlTarget) else sqlite.dialect()
    return str(target.column_type(col, "postgres", in_key).compile(dialect=compiler))


@pytest.mark.parametrize(
    ("col", "in_key", "expected"),
    [
        (Column("a", "timestamptz", "timestamp with time zone"), False, "DATETIME(6)"),
        (Column("a", "numeric", "numeric(12,2)", precision=12, scale=2), False, "DECIMAL(12, 2)"),
        (Column("a", "numeric", "numeric"), False, "LONGTEXT"),
        (Column("a", "jsonb", "jsonb"), False, "JSON"),
        (Column("a", "uuid", "uuid"), False, "CHAR(36)"),
        (Column("a", "bytea", "bytea"), False, "LONGBLOB"),
        (Column("a", "text", "text"), False, "LONGTEXT"),
        (Column("a", "text", "text"), True, "VARCHAR(255)"),
        (Column("a", "varchar", "character varying(40)"), False, "VARCHAR(40)"),
        (Column("a", "varchar", "character varying(4000)"), False, "LONGTEXT"),
        (Column("a", "bool", "boolean"), False, "BOOL"),
        (Column("a", "time", "time without time zone"), False, "TIME(6)"),
    ],
)
def test_mariadb_column_types(col: Column, in_key: bool, expected: str) -> None:
    assert _ddl(MySqlTarget(), col, in_key) == expected


def test_sqlite_keeps_exact_values_as_text() -> None:
    target = SqliteTarget()
    assert _ddl(target, Column("a", "numeric", "numeric(12,2)", precision=12, scale=2)) == "TEXT"
    assert _ddl(target, Column("a", "int8", "bigint")) == "INTEGER"
    aware = datetime(2024, 1, 1, 13, 0, 0, 5, tzinfo=UTC)
    assert sqlite_text(aware) == "2024-01-01 13:00:00.000005"
    assert sqlite_text(Decimal("12.50")) == "12.50"
    assert sqlite_text(date(2024, 2, 3)) == "2024-02-03"
    assert sqlite_text(time(1, 2, 3)) == "01:02:03"
