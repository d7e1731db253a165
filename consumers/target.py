"""The target database connection: a SQLAlchemy engine on the task's target URL (psycopg 3
driver, UTC session time zone), and the psycopg connection under it for COPY and for SQL
composed with `psycopg.sql`."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url

from headwater.config import TaskConfig


def target_url(task: TaskConfig) -> str:
    """The target URL with the psycopg 3 driver (`postgresql://` means psycopg2 otherwise)."""
    url = make_url(task.target.url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def safe_target_url(task: TaskConfig) -> str:
    """The target URL for logs and messages: the password hidden."""
    return make_url(task.target.url).render_as_string(hide_password=True)


def target_engine(task: TaskConfig, pool_size: int = 1) -> Engine:
    """An engine on the target; sessions run in UTC so naive timestamps stay as they are."""
    return create_engine(
        target_url(task),
        pool_size=pool_size,
        pool_pre_ping=True,
        connect_args={"options": "-c TimeZone=UTC", "application_name": f"headwater-{task.name}"},
    )


def driver_connection(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy connection."""
    raw = conn.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(f"target driver is {type(raw).__name__}, expected psycopg")
    return raw
