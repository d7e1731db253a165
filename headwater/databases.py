"""Source and target databases as the checks (assess, convert, validate) see them: one
SQLAlchemy engine per endpoint with the session settings the canonical value forms rely on
(UTC, ISO dates), the selected source tables described from the source catalog, and where
each lands in the target. Read-only helpers over the producers' catalog functions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from headwater.config import TaskConfig
from producers.errors import SourceError, SourceUnreachable
from schemas.tables import TableId, TableSchema

ENGINES = ("postgres", "mysql")


def redacted(url: str) -> str:
    """The URL without its password, for every report and message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable url>"


def sa_url(url: str, engine: str) -> str:
    """The URL with the driver the checks use (psycopg 3, PyMySQL)."""
    parsed = make_url(url)
    driver = "postgresql+psycopg" if engine == "postgres" else "mysql+pymysql"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def _connect_args(engine: str) -> dict[str, Any]:
    if engine == "postgres":
        return {"options": "-c TimeZone=UTC -c DateStyle=ISO", "connect_timeout": 10}
    return {"charset": "utf8mb4", "init_command": "SET time_zone = '+00:00'", "connect_timeout": 10}


def open_engine(url: str, engine: str, role: str) -> Engine:
    """An engine for the `role` ('source' or 'target') database, checked with one query."""
    if engine not in ENGINES:
        raise SourceError(
            f"{role}.engine {engine!r} is not supported by the checks; use postgres or mysql"
        )
    if engine == "mysql" and not make_url(sa_url(url, engine)).database:
        raise SourceError(f"{role}.url {redacted(url)} names no database; end it with /<database>")
    try:
        eng = sa.create_engine(sa_url(url, engine), connect_args=_connect_args(engine), pool_size=2)
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except ArgumentError as exc:
        raise SourceError(f"{role}.url {redacted(url)} is not a valid URL: {exc}") from None
    except DBAPIError as exc:
        first = " ".join(str(exc.orig).split())[:200] or type(exc.orig).__name__
        raise SourceUnreachable(
            f"cannot connect to {role} {redacted(url)}: {first}; "
            f"check {role}.url and that the server runs (`headwater stack up`)"
        ) from None
    return eng


def quote(engine: Engine, name: str) -> str:
    """One identifier, quoted by the engine's dialect."""
    return str(engine.dialect.identifier_preparer.quote_identifier(name))


def qualified(engine: Engine, where: tuple[str | None, str]) -> str:
    schema, name = where
    return f"{quote(engine, schema)}.{quote(engine, name)}" if schema else quote(engine, name)


@dataclass(frozen=True)
class Endpoint:
    """One side of a task: its engine name, SQLAlchemy engine and redacted URL."""

    role: str
    kind: str  # 'postgres' or 'mysql'
    engine: Engine
    url: str

    def table(self, where: tuple[str | None, str]) -> str:
        return qualified(self.engine, where)


@contextmanager
def endpoints(task: TaskConfig) -> Iterator[tuple[Endpoint, Endpoint]]:
    """The task's source and target, opened and checked; disposed on exit."""
    if task.target.engine not in ENGINES:
        raise SourceError(
            f"target.engine {task.target.engine!r} is not supported by the checks yet; "
            "use postgres or mysql"
        )
    src = open_engine(task.source.url, task.source.engine, "source")
    try:
        dst = open_engine(task.target.url, task.target.engine, "target")
    except BaseException:
        src.dispose()
        raise
    try:
        yield (
            Endpoint("source", task.source.engine, src, redacted(task.source.url)),
            Endpoint("target", task.target.engine, dst, redacted(task.target.url)),
        )
    finally:
        src.dispose()
        dst.dispose()


def target_where(task: TaskConfig, table: TableId) -> tuple[str | None, str]:
    """Where the sink puts a source table: PostgreSQL keeps the source's schema unless
    `target.schema` names one; MySQL uses the URL's database unless `target.schema` does."""
    if task.target.engine == "postgres":
        return task.target.schema_ or table.schema, table.name
    return task.target.schema_, table.name


def source_schemas(task: TaskConfig, only: list[str] | None = None) -> list[TableSchema]:
    """The selected source tables, described from the source catalog; `only` limits them to
    the named tables (`schema.table` or a bare name) and each must exist."""
    if task.source.engine == "mysql":
        from producers.mysql import catalog as my_catalog
        from producers.mysql.connection import connect as my_connect

        with my_connect(task.source.url) as my:
            tables = _limit(my_catalog.selected_tables(my, task.tables), only)
            return [my_catalog.describe_table(my, t) for t in tables]
    from producers.postgres import catalog as pg_catalog
    from producers.postgres.connection import connect as pg_connect

    with pg_connect(task.source.url) as pg:
        tables = _limit(pg_catalog.selected_tables(pg, task.tables), only)
        types = pg_catalog.TypeResolver(pg)
        return [pg_catalog.describe_table(pg, t, types) for t in tables]


def _limit(tables: list[TableId], only: list[str] | None) -> list[TableId]:
    if not only:
        return tables
    chosen: list[TableId] = []
    for name in only:
        found = [t for t in tables if str(t) == name or t.name == name]
        if not found:
            raise SourceError(
                f"table {name!r} is not among the task's selected source tables; "
                "check --tables against tables.include/exclude and the source"
            )
        chosen.extend(t for t in found if t not in chosen)
    return chosen
