"""The MySQL/MariaDB output of the native sink path (native/src/mysql.rs): the same decode and
collapse as consumers/native_collapse.py, written as the text rows `LOAD DATA LOCAL INFILE`
reads, each value as the Python path binds it for MariaDB (consumers/mysql_target.py and
PyMySQL's literals). The library answers "fallback" for whatever it would write differently
(PostgreSQL infinities, NaN, a uuid in another spelling...), and the Python path decides it.
"""

from __future__ import annotations

import ctypes
from array import array
from itertools import accumulate
from typing import Any

from consumers import native_collapse
from consumers.batch import CopyRows
from consumers.native_collapse import Fallback
from schemas import native_lib


def _declare(lib: ctypes.CDLL | None) -> ctypes.CDLL | None:
    """The library with the MySQL functions declared; None if not loaded or built before
    them."""
    if lib is None or not hasattr(lib, "hw_collapse_mysql"):
        return None
    p, size, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64
    lib.hw_mysql_plan_new.argtypes = [ctypes.c_char_p, size]
    lib.hw_mysql_plan_new.restype = p
    lib.hw_mysql_plan_free.argtypes = [p]
    lib.hw_mysql_plan_free.restype = None
    lib.hw_collapse_mysql.argtypes = [p, ctypes.c_char_p, size, p, size, i64, i64]
    lib.hw_collapse_mysql.restype = ctypes.POINTER(native_lib.CollapseResult)
    return lib


_LIB = _declare(native_lib.LIB)


def available() -> bool:
    """Whether the native library is loaded and writes MySQL rows."""
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
    assert _LIB is not None
    data = b"".join(values)
    ends = array("Q", accumulate(map(len, values)))
    ends_address = ends.buffer_info()[0] if values else None
    result = _LIB.hw_collapse_mysql(
        plan._handle, data, len(data), ends_address, len(values), deleted_group, upsert_group
    )
    try:
        r = result.contents
        if r.status != 0:
            return Fallback(r.status == 2, int(r.at))
        text = ctypes.string_at(r.copy_ptr, r.copy_len) if r.copy_len else b""
        rows = CopyRows(columns, text, int(r.upserts), int(r.deletes))
        return rows, (int(r.max_ts) if r.has_ts else None)
    finally:
        _LIB.hw_result_free(result)
