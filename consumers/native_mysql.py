"""The MySQL/MariaDB output of the native sink path (native/src/mysql.rs): the same decode and
collapse as consumers/native_collapse.py, written as the text rows `LOAD DATA LOCAL INFILE`
reads, each value as the Python path binds it for MariaDB (consumers/mysql_target.py and
PyMySQL's literals). The library answers "fallback" for whatever it would write differently
(PostgreSQL infinities, NaN, a uuid in another spelling...), and the Python path decides it.
"""

from __future__ import annotations

from typing import Any

from consumers import native_collapse
from consumers.batch import CopyRows
from consumers.native_collapse import Fallback
from schemas import native_lib

_LIB = native_lib.LIB


def available() -> bool:
    """Whether the native library is loaded."""
    return _LIB is not None


def _kind(avro_type: Any) -> str:
    """How a row column differs for MySQL from its Avro type (see native/src/mysql.rs)."""
    kind = avro_type[1] if isinstance(avro_type, list) and len(avro_type) == 2 else None
    if not isinstance(kind, dict):
        return "."
    if kind.get("logicalType") == "uuid":
        return "u"
    if kind.get("logicalType") == "decimal":
        return f"p{max(int(kind.get('precision', 0)), 1)}"
    return "."


def plan_spec(schema_id: int, value_schema: dict[str, Any]) -> str | None:
    """The library's MySQL plan for an envelope schema, or None (the Python path decodes)."""
    base = native_collapse.plan_spec(schema_id, value_schema)
    if base is None:
        return None
    row = value_schema["fields"][0]["type"][1]
    kinds = [_kind(f["type"]) for f in row.get("fields", [])]
    return base + "\nmysql " + " ".join(kinds)


class MysqlPlan(native_lib.NativePlan):
    """A loaded MySQL plan for one envelope schema id."""

    _new, _free = "hw_mysql_plan_new", "hw_mysql_plan_free"


def plan(schema_id: int, value_schema: dict[str, Any]) -> MysqlPlan | None:
    """The loaded plan of an envelope schema, or None when the library does not take it."""
    spec = plan_spec(schema_id, value_schema)
    return None if spec is None else MysqlPlan(spec)


def collapse(
    plan: MysqlPlan,
    columns: tuple[str, ...],
    values: list[bytes],
    deleted_group: int,
    upsert_group: int,
) -> tuple[CopyRows, int | None] | Fallback:
    """Collapse the Avro envelopes `values` (one partition, offset order) to LOAD DATA rows
    `(group, *columns)` in CopyRows.copy, and the latest source commit time among them."""
    return native_collapse.collapse_with(
        "hw_collapse_mysql", plan, columns, values, deleted_group, upsert_group
    )
