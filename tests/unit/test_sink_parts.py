"""The sink's pure parts: which topics it reads, the DDL it writes, how it classifies
failures and how it computes lag."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy.exc

from consumers.ddl import DdlError, add_column, create_table, postgres_column_type
from consumers.decode import is_change_topic, subscription_pattern
from consumers.errors import is_transient
from consumers.lag import partition_lag
from consumers.offsets import StoredOffset
from schemas.registry import RegistryError
from schemas.tables import Column, TableId, TableSchema


@pytest.mark.parametrize(
    ("topic", "wanted"),
    [
        ("my-task.public.orders", True),
        ("my-task.sales.order.lines", True),
        ("my-task.dlq", False),
        ("my-taskx.public.orders", False),
        ("other.public.orders", False),
        ("__headwater_state", False),
    ],
)
def test_the_sink_reads_only_its_change_topics(topic: str, wanted: bool) -> None:
    assert is_change_topic("my-task", topic) is wanted
    assert bool(re.match(subscription_pattern("my-task"), topic)) is wanted


def test_the_subscription_escapes_the_prefix() -> None:
    assert subscription_pattern("a.b-c") == r"^a\.b-c\.[^.]+\..+"
    assert not re.match(subscription_pattern("a.b"), "aXb.public.t")


SCHEMA = TableSchema(
    TableId("public", "orders"),
    (
        Column("id", "int8", "bigint", nullable=False),
        Column("total", "numeric", "numeric(12,2)", precision=12, scale=2),
        Column("Note", "varchar", "character varying(40)"),
    ),
    ("id",),
)


def test_create_table_keeps_the_source_types_nullability_and_key() -> None:
    types = {c.name: postgres_column_type(c, "postgres") for c in SCHEMA.columns}
    statement = create_table(TableId("dst", "orders"), SCHEMA, types).as_string(None)
    assert statement == (
        'CREATE TABLE IF NOT EXISTS "dst"."orders" ("id" bigint NOT NULL, '
        '"total" numeric(12,2), "Note" character varying(40), PRIMARY KEY ("id"))'
    )


def test_an_added_column_is_always_nullable() -> None:
    col = Column("code", "int4", "integer", nullable=False)
    statement = add_column(TableId("public", "t"), col, "integer").as_string(None)
    assert statement == 'ALTER TABLE "public"."t" ADD COLUMN IF NOT EXISTS "code" integer'


def test_a_type_that_is_not_a_type_name_is_refused() -> None:
    col = Column("x", "text", "text; DROP TABLE t")
    with pytest.raises(DdlError):
        create_table(
            TableId("public", "t"), SCHEMA, {"id": "bigint", "total": "x", "Note": col.sql_type}
        )


def test_mysql_types_map_to_postgres() -> None:
    assert postgres_column_type(Column("a", "int", "int(10) unsigned"), "mysql") == "bigint"
    assert postgres_column_type(Column("a", "int", "int(11)"), "mysql") == "integer"
    assert postgres_column_type(Column("a", "json", "json"), "mysql") == "jsonb"
    assert postgres_column_type(Column("a", "geometry", "geometry"), "mysql") == "text"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.errors.DeadlockDetected("deadlock"), True),
        (psycopg.errors.SerializationFailure("serialization"), True),
        (psycopg.OperationalError("connection lost"), True),
        (psycopg.errors.UniqueViolation("duplicate"), False),
        (psycopg.errors.InvalidTextRepresentation("bad"), False),
        (sqlalchemy.exc.OperationalError("x", None, psycopg.OperationalError("lost")), True),
        (sqlalchemy.exc.IntegrityError("x", None, psycopg.errors.NotNullViolation("n")), False),
        (RegistryError("schema registry at http://r is unreachable (refused)"), True),
        (RegistryError("schema registry GET /schemas/ids/9 failed with 404: not found"), False),
        (RegistryError("schema registry GET /schemas/ids/9 failed with 503: busy"), True),
        (ValueError("bad"), False),
    ],
)
def test_failures_are_classified(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_lag_counts_from_the_stored_offset_and_latency_from_the_source_time() -> None:
    applied_at = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    stored = StoredOffset(90, int(applied_at.timestamp() * 1000) - 250, applied_at)
    lag = partition_lag("t.public.x", 0, 0, 100, stored)
    assert (lag.applied_offset, lag.lag, lag.latency_ms) == (90, 10, 250)


def test_lag_before_the_first_batch_counts_what_retention_kept() -> None:
    lag = partition_lag("t.public.x", 0, 40, 100, None)
    assert (lag.applied_offset, lag.lag, lag.latency_ms) == (0, 60, None)
