"""Tables a task's sinks stopped, kept in the target (`headwater_stopped_tables`) with the
one-line reason, so `headwater status` shows them whether or not a sink runs: a table the
target cannot take (a changed column type, missing with `create_tables: false`) and the
table of a record refused with `on_error: stop`. A row goes when the table applies again.
Written by the sink in short transactions of its own, after the batch: it is a report, not
a position."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateTable

from headwater.config import TaskConfig

_STOPPED_AT = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


@dataclass(frozen=True, slots=True)
class StoppedTable:
    """A target table the sink does not apply, and why."""

    table: str
    reason: str
    stopped_at: datetime


def stopped_table(dialect: str) -> sa.Table:
    return sa.Table(
        "headwater_stopped_tables",
        sa.MetaData(),
        sa.Column("task", sa.String(63), primary_key=True),
        sa.Column("target_table", sa.String(255), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("stopped_at", _STOPPED_AT, nullable=False),
        schema="public" if dialect == "postgresql" else None,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def create_stopped_table(conn: Connection) -> None:
    """Create the table if missing; outside a batch (DDL commits on MySQL)."""
    conn.execute(CreateTable(stopped_table(conn.dialect.name), if_not_exists=True))


def read_stopped(conn: Connection, task: str) -> dict[str, StoppedTable]:
    table = stopped_table(conn.dialect.name)
    if not sa.inspect(conn).has_table(table.name, schema=table.schema):
        return {}
    query = sa.select(table).where(table.c.task == task).order_by(table.c.target_table)
    return {
        r.target_table: StoppedTable(
            r.target_table, r.reason, r.stopped_at.replace(tzinfo=r.stopped_at.tzinfo or UTC)
        )
        for r in conn.execute(query)
    }


def write_stopped(
    conn: Connection, task: str, stopped: Mapping[str, str], resumed: Collection[str]
) -> None:
    """Record `stopped` (target table -> reason), forget `resumed` (in the caller's
    transaction)."""
    table = stopped_table(conn.dialect.name)
    names = sorted(set(stopped) | set(resumed))
    if names:
        conn.execute(
            sa.delete(table).where((table.c.task == task) & table.c.target_table.in_(names))
        )
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {"task": task, "target_table": name, "reason": reason[:4000], "stopped_at": now}
        for name, reason in sorted(stopped.items())
    ]
    if rows:
        conn.execute(sa.insert(table), rows)


def _engine(task: TaskConfig) -> Engine:
    if task.target.engine == "postgres":
        from consumers.target import target_engine

        return target_engine(task)
    from consumers.sql_offsets import sql_dialect

    return sql_dialect(task).engine(task)


def load_stopped(task: TaskConfig) -> list[StoppedTable]:
    """The tables `task`'s sinks stopped, on a connection of its own."""
    engine = _engine(task)
    try:
        with engine.connect() as conn, conn.begin():
            return list(read_stopped(conn, task.name).values())
    finally:
        engine.dispose()


def forget_stopped(conn: Connection, task: str) -> None:
    """Forget `task`'s stopped tables (with its offsets: the next sink tries them again)."""
    table = stopped_table(conn.dialect.name)
    if sa.inspect(conn).has_table(table.name, schema=table.schema):
        conn.execute(sa.delete(table).where(table.c.task == task))
