"""The sink's errors and the one place that tells a transient failure (retry the batch) from a
terminal one (stop the sink): lost connections, deadlocks, serialization failures, lock
timeouts and an unreachable registry are transient; bad data, constraint violations and
wrong configuration are terminal."""

from __future__ import annotations

import re
import sqlite3

import psycopg
import sqlalchemy.exc
from confluent_kafka import KafkaError, KafkaException

from schemas.registry import RegistryError

_REGISTRY_5XX = re.compile(r"failed with 5\d\d")

# MySQL/MariaDB error codes worth a retry: lock wait timeout, deadlock, server gone/lost,
# cannot connect, too many connections, server shutting down; and a savepoint that does not
# exist, which is how a deadlock inside a savepoint surfaces (the server rolled the whole
# transaction back, and SQLAlchemy's ROLLBACK TO SAVEPOINT then fails).
_MYSQL_TRANSIENT = {1040, 1053, 1205, 1213, 1305, 2002, 2003, 2006, 2013, 2055}

# MySQL/MariaDB error codes of one record the target refuses: NULL in a NOT NULL column,
# duplicate unique key, value out of range, truncated, wrong value, too long, foreign key,
# CHECK constraint.
MYSQL_RECORD_ERRORS = {1048, 1062, 1264, 1265, 1292, 1366, 1406, 1451, 1452, 1690, 3819, 4025}


class SinkError(RuntimeError):
    """The sink cannot go on; the message names the task, the table, the position and the
    fix. Carries them as attributes too."""

    def __init__(
        self, message: str, *, task: str = "", table: str = "", position: str = ""
    ) -> None:
        super().__init__(message)
        self.task, self.table, self.position = task, table, position


class TargetError(SinkError):
    """The target refuses the task's tables (missing table, wrong key, unknown type)."""


class PositionConflict(Exception):
    """The offsets stored in the target moved under this sink (another sink instance applied
    the same partitions): the batch is dropped and the consumer seeks to the stored offsets."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        names = ", ".join(f"{t}[{p}]" for t, p in partitions)
        super().__init__(f"stored offsets of {names} moved under this sink")
        self.partitions = partitions


def _root(exc: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrapper."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def mysql_code(exc: BaseException) -> int | None:
    """The MySQL/MariaDB error number of `exc` (or of the driver error under it)."""
    root = _root(exc)
    # By module, not by class: PyMySQL has no type stubs here.
    if _from_pymysql(root) and root.args and isinstance(root.args[0], int):
        return root.args[0]
    return None


def _from_pymysql(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("pymysql")


def is_record_error(exc: BaseException) -> bool:
    """Whether `exc` is about the values of a record (a dead-letter case), not about the
    target, its tables or the connection."""
    root = _root(exc)
    if isinstance(root, psycopg.errors.IntegrityError | psycopg.errors.DataError):
        return True
    if isinstance(root, sqlite3.IntegrityError | sqlite3.DataError):
        return True
    return mysql_code(root) in MYSQL_RECORD_ERRORS


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same batch later may succeed."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    root = _root(exc)
    if _from_pymysql(root):
        # InterfaceError: the connection was closed under the driver.
        return type(root).__name__ == "InterfaceError" or mysql_code(root) in _MYSQL_TRANSIENT
    if isinstance(root, sqlite3.OperationalError):
        return "locked" in str(root) or "busy" in str(root)
    if isinstance(root, psycopg.OperationalError):
        # Class 08 (connection), 40 (deadlock, serialization), 53 (resources), 55P03 (lock
        # not available), 57 (shutdown, query cancelled) all land here.
        return True
    if isinstance(root, psycopg.InterfaceError):
        return "closed" in str(root)  # the connection went away between statements
    if isinstance(root, sqlalchemy.exc.OperationalError | sqlalchemy.exc.TimeoutError):
        return True
    if isinstance(root, RegistryError):
        return "unreachable" in str(root) or _REGISTRY_5XX.search(str(root)) is not None
    if isinstance(root, KafkaException):
        err = root.args[0] if root.args else None
        return isinstance(err, KafkaError) and bool(err.retriable())
    return isinstance(root, ConnectionError | TimeoutError)
