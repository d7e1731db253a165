"""Values on their way into a PostgreSQL target: PostgreSQL's infinities, carried through
Avro as PgInfinity (schemas.pg_types), become `infinity` / `-infinity` again."""

from __future__ import annotations

from typing import Any

from schemas.pg_types import PgInfinity


def pg_value(value: Any) -> Any:
    """`value` as COPY should write it to PostgreSQL."""
    return value.text if isinstance(value, PgInfinity) else value
