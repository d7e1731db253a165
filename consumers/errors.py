"""The sink's errors and the one place that tells a transient failure (retry the batch) from a
terminal one (stop the sink): lost connections, deadlocks, serialization failures, lock
timeouts and an unreachable registry are transient; bad data, constraint violations and
wrong configuration are terminal."""

from __future__ import annotations

import re

import psycopg
import sqlalchemy.exc
from confluent_kafka import KafkaError, KafkaException

from schemas.registry import RegistryError

_REGISTRY_5XX = re.compile(r"failed with 5\d\d")


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


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same batch later may succeed."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    root = _root(exc)
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
