"""The native fast path of a PostgreSQL sink (native/, a Rust library loaded with ctypes): the
raw messages of one partition go in, the COPY text of their net changes comes out, with no
Python object per event.

It takes only what the Python rules (consumers/batch.py) decide the same way: a keyed table,
one schema version, inserts/updates/deletes carrying whole rows, column types listed in
`_COLUMN_CODES`. Anything else in a partition's messages makes the library answer
"fallback", and the sink decodes that topic's messages in Python as before. Without the
library (not built, or HEADWATER_NATIVE=0) the sink runs in Python alone.
"""

from __future__ import annotations

import ctypes
import logging
from array import array
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any

from consumers.batch import CopyRows
from schemas import native_lib

log = logging.getLogger(__name__)

_LIB = native_lib.LIB


def available() -> bool:
    """Whether the native library is loaded."""
    return _LIB is not None


# Avro types of row columns the library writes, as (type, logicalType) -> code.
_COLUMN_CODES: dict[tuple[str, str | None], str] = {
    ("int", None): "l",
    ("long", None): "l",
    ("float", None): "f",
    ("double", None): "d",
    ("boolean", None): "b",
    ("string", None): "s",
    ("string", "uuid"): "s",
    ("bytes", None): "y",
    ("int", "date"): "a",
    ("long", "time-micros"): "t",
    ("long", "timestamp-micros"): "T",
    ("long", "local-timestamp-micros"): "L",
}
_SOURCE_CODES = {
    "null": "n",
    "boolean": "b",
    "int": "l",
    "long": "l",
    "float": "f",
    "double": "d",
    "string": "s",
    "bytes": "y",
}
_ENVELOPE = ("before", "after", "source", "op", "ts_ms", "unavailable")


def _column_code(avro_type: Any) -> str | None:
    if not (isinstance(avro_type, list) and len(avro_type) == 2 and avro_type[0] == "null"):
        return None
    kind = avro_type[1]
    if isinstance(kind, str):
        return _COLUMN_CODES.get((kind, None))
    if not isinstance(kind, dict):
        return None
    base, logical = kind.get("type"), kind.get("logicalType")
    if base == "bytes" and logical == "decimal":
        scale = int(kind.get("scale", 0))
        return f"D{scale}" if scale >= 0 and int(kind.get("precision", 0)) <= 38 else None
    if not isinstance(base, str):
        return None
    if logical is not None and (base, logical) not in _COLUMN_CODES:
        # A logical type the library does not know: decoded as its base type by Python
        # readers too only if it is not one of fastavro's, so leave it to Python.
        return None
    return _COLUMN_CODES.get((base, logical))


def _source_code(avro_type: Any) -> str | None:
    if isinstance(avro_type, list):
        if len(avro_type) == 2 and avro_type[0] == "null" and isinstance(avro_type[1], str):
            inner = _SOURCE_CODES.get(avro_type[1])
            return None if inner is None else "?" + inner
        return None
    return _SOURCE_CODES.get(avro_type) if isinstance(avro_type, str) else None


def plan_spec(schema_id: int, value_schema: dict[str, Any]) -> str | None:
    """The library's plan for an envelope schema, or None when the schema has anything the
    library does not take (then the Python path decodes it)."""
    fields = value_schema.get("fields", [])
    if tuple(f.get("name") for f in fields) != _ENVELOPE:
        return None
    before = fields[0]["type"]
    if not (isinstance(before, list) and len(before) == 2 and isinstance(before[1], dict)):
        return None
    row = before[1]
    names = [f["name"] for f in row.get("fields", [])]
    columns = [f.get("headwater.column", f["name"]) for f in row.get("fields", [])]
    codes = [_column_code(f["type"]) for f in row.get("fields", [])]
    keys = row.get("headwater.primary_key") or []
    source = fields[2]["type"]
    if not isinstance(source, dict) or not keys or None in codes:
        return None
    source_names = [f["name"] for f in source.get("fields", [])]
    source_codes = [_source_code(f["type"]) for f in source.get("fields", [])]
    if None in source_codes or "ts_ms" not in source_names or len(set(names)) != len(names):
        return None
    if any(k not in columns for k in keys):
        return None
    if any(codes[columns.index(k)] in ("f", "d") for k in keys):
        return None  # 0.0 == -0.0 and NaN != NaN: float keys are compared in Python
    return "\n".join(
        [
            f"id {schema_id}",
            "source " + " ".join(str(c) for c in source_codes),
            f"ts {source_names.index('ts_ms')}",
            "cols " + " ".join(str(c) for c in codes),
            "key " + " ".join(str(columns.index(k)) for k in keys),
        ]
    )


class Plan(native_lib.NativePlan):
    """A loaded plan for one envelope schema id."""

    _new, _free = "hw_plan_new", "hw_plan_free"

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self._binary: dict[tuple[str, ...], bool] = {}

    def binary_ok(self, types: tuple[str, ...]) -> bool:
        """Whether the library writes binary COPY for target columns of these type names
        (`pg_type.typname`, one per column of the plan): only where that gives the target
        the value the text rows would."""
        known = self._binary.get(types)
        if known is None:
            assert _LIB is not None
            spec = " ".join(types).encode()
            known = self._binary[types] = bool(_LIB.hw_binary_ok(self._handle, spec, len(spec)))
        return known


@dataclass(frozen=True, slots=True)
class Fallback:
    """The library left these messages to the Python path; `at` is the message concerned."""

    malformed: bool
    at: int


def collapse(
    plan: Plan,
    columns: tuple[str, ...],
    values: list[bytes],
    deleted_group: int,
    upsert_group: int,
    types: tuple[str, ...] | None = None,
) -> tuple[CopyRows, int | None] | Fallback:
    """Collapse the Avro envelopes `values` (one partition, offset order) to COPY rows, and
    the latest source commit time among them: binary COPY when the target column types
    `types` are known and take it (Plan.binary_ok), else text."""
    if types is None or not plan.binary_ok(types):
        return collapse_with("hw_collapse", plan, columns, values, deleted_group, upsert_group)
    spec = " ".join(types).encode()
    result = collapse_with(
        "hw_collapse_binary", plan, columns, values, deleted_group, upsert_group, spec, len(spec)
    )
    if isinstance(result, Fallback) and not result.malformed:
        # A value binary cannot carry as the text would (say, out of a column's range):
        # the text rows give the target what the Python path would.
        return collapse_with("hw_collapse", plan, columns, values, deleted_group, upsert_group)
    if isinstance(result, Fallback):
        return result
    rows, max_ts = result
    return replace(rows, binary=types), max_ts


def collapse_with(
    function: str,
    plan: native_lib.NativePlan,
    columns: tuple[str, ...],
    values: list[bytes],
    deleted_group: int,
    upsert_group: int,
    *extra: Any,
) -> tuple[CopyRows, int | None] | Fallback:
    """Call the library's collapse `function` (COPY or LOAD DATA rows) on `values`; `extra`
    arguments follow the groups."""
    assert _LIB is not None
    data = b"".join(values)
    ends = array("Q", accumulate(map(len, values)))
    ends_address = ends.buffer_info()[0] if values else None
    groups = (deleted_group, upsert_group)
    result = getattr(_LIB, function)(
        plan._handle, data, len(data), ends_address, len(values), *groups, *extra
    )
    try:
        r = result.contents
        if r.status != 0:
            return Fallback(r.status == 2, int(r.at))
        copy = ctypes.string_at(r.copy_ptr, r.copy_len) if r.copy_len else b""
        rows = CopyRows(columns, copy, int(r.upserts), int(r.deletes), bool(r.inserts_only))
        return rows, (int(r.max_ts) if r.has_ts else None)
    finally:
        _LIB.hw_result_free(result)
