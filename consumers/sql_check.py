"""Preflight of a MySQL/MariaDB or SQLite target: connect through SQLAlchemy and run one
query; a failure is one line naming the fix (server down, wrong credentials, unknown
database, a SQLite file in a directory that does not exist)."""

from __future__ import annotations

import sqlalchemy as sa

from consumers.errors import TargetError
from consumers.sql_offsets import sql_dialect
from consumers.target import safe_target_url
from headwater.config import TaskConfig

# MySQL error numbers and the fix each one calls for.
_MYSQL_FIXES = {
    1045: "check the user and password in target.url",
    1044: "grant the user access to the database",
    1049: "create the database first (CREATE DATABASE) or fix target.url",
    2003: "check target.url and that the server runs (`headwater stack up`)",
    2005: "check the host name in target.url",
}


def check_sql_target(task: TaskConfig) -> None:
    """Raise TargetError with one line if the target cannot be reached and written."""
    where = safe_target_url(task)
    try:
        engine = sql_dialect(task).engine(task)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise TargetError(f"target.url {where} is not a valid SQLAlchemy URL: {exc}") from None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            conn.rollback()
    except sa.exc.DBAPIError as exc:
        raise TargetError(f"cannot connect to target {where}: {_reason(task, exc)}") from None
    finally:
        engine.dispose()


def _reason(task: TaskConfig, exc: sa.exc.DBAPIError) -> str:
    orig = exc.orig
    first = " ".join(str(orig).split()) or type(orig).__name__
    if task.target.engine == "sqlite":
        return f"{first}; check that the directory of the file in target.url exists"
    code = orig.args[0] if orig is not None and orig.args else None
    fix = _MYSQL_FIXES.get(code) if isinstance(code, int) else None
    return f"{first}; {fix or 'check target.url'}"
