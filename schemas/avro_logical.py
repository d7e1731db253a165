"""Reading back the PostgreSQL infinities (schemas.pg_types.PgInfinity): fastavro turns an
Avro date or timestamp into a Python date/datetime, which cannot hold them, so the extreme
values are read as PgInfinity and everything else as fastavro would. Importing this module
installs the readers (fastavro keeps them in one process-wide table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastavro.read

from schemas.pg_types import DATE_INFINITY, TIMESTAMP_INFINITY

Reader = Callable[[Any, Any, Any], Any]


def _infinity_aware(original: Reader, infinities: dict[str, Any]) -> Reader:
    extremes = {int(v): v for v in infinities.values()}

    def read(data: Any, writer_schema: Any, reader_schema: Any) -> Any:
        found = extremes.get(data) if isinstance(data, int) else None
        return found if found is not None else original(data, writer_schema, reader_schema)

    read.headwater_infinity_aware = True  # type: ignore[attr-defined]
    return read


def install() -> None:
    """Install the readers once (idempotent)."""
    table = fastavro.read.LOGICAL_READERS
    for name, infinities in (
        ("int-date", DATE_INFINITY),
        ("long-timestamp-micros", TIMESTAMP_INFINITY),
        ("long-local-timestamp-micros", TIMESTAMP_INFINITY),
    ):
        if not getattr(table[name], "headwater_infinity_aware", False):
            table[name] = _infinity_aware(table[name], infinities)


install()
