"""The full load's native row encoder (native/src/encode.rs, through schemas/native_lib.py):
COPY text from PostgreSQL in, each row's Avro key and `r` envelope out, byte for byte what
`parse_pg_text` and the compiled codec write, with no Python object per column.

A block holding anything the library does not write the same way (a value Python refuses,
an escape PostgreSQL does not emit, a type without a code here) comes back as a fallback,
and the worker takes that block through the Python path (`parse_copy_line` +
`parse_pg_text`), which also raises the errors a user should see.
"""

from __future__ import annotations

import ctypes
import re
import struct
from dataclasses import dataclass

from schemas import native_lib
from schemas.pg_types import avro_type_for
from schemas.tables import TableSchema

_LIB = native_lib.LIB
_HEADER = struct.Struct(">bI")

_CODES: dict[tuple[str, str | None], str] = {
    ("int", None): "l",
    ("long", None): "l",
    ("float", None): "f",
    ("double", None): "d",
    ("boolean", None): "b",
    ("string", None): "s",
    ("string", "uuid"): "s",  # PostgreSQL writes the canonical form str(UUID) gives
    ("bytes", None): "y",
    ("int", "date"): "a",
    ("long", "time-micros"): "t",
    ("long", "timestamp-micros"): "T",
    ("long", "local-timestamp-micros"): "L",
}


def available() -> bool:
    """Whether the native library is loaded."""
    return _LIB is not None


def encoder_spec(schema: TableSchema) -> str | None:
    """The library's plan for a table's rows, or None when a column has no code."""
    codes = []
    for col in schema.columns:
        avro = avro_type_for(col)
        if isinstance(avro, str):
            code = _CODES.get((avro, None))
        elif avro.get("logicalType") == "decimal":
            scale, precision = int(avro.get("scale", 0)), int(avro["precision"])
            code = f"D{scale}" if scale >= 0 and precision <= 38 else None
        else:
            code = _CODES.get((str(avro["type"]), avro.get("logicalType")))
        if code is None:
            return None
        codes.append(code)
    names = schema.column_names
    keys = " ".join(str(names.index(k)) for k in schema.primary_key)
    return f"cols {' '.join(codes)}\nkey {keys}"


class RowEncoder(native_lib.NativePlan):
    """The library's encoder for one table shape."""

    _new, _free = "hw_enc_plan_new", "hw_enc_plan_free"

    def encode(self, data: bytes, frame: EnvelopeFrame) -> EncodedRows | None:
        """The complete lines of `data` encoded, or None when Python must take them."""
        assert _LIB is not None
        result = _LIB.hw_encode(
            self._handle,
            data,
            len(data),
            frame.key_header,
            len(frame.key_header),
            frame.prefix,
            len(frame.prefix),
            frame.suffix,
            len(frame.suffix),
        )
        try:
            r = result.contents
            if r.status != 0:
                return None
            rows = int(r.rows)
            buf = ctypes.string_at(r.buf_ptr, r.buf_len) if r.buf_len else b""
            ends = list((ctypes.c_uint64 * (2 * rows)).from_address(r.ends_ptr)) if rows else []
            return EncodedRows(buf, ends, rows, int(r.consumed))
        finally:
            _LIB.hw_encoded_free(result)


@dataclass(frozen=True, slots=True)
class EnvelopeFrame:
    """What surrounds a row in its messages: the key's wire header, and the envelope's bytes
    before the `after` branch (header, null `before`) and after the row (`source`, `op`,
    `ts_ms`, `unavailable`), cut from an envelope encoded with a null `after`."""

    key_header: bytes
    prefix: bytes
    suffix: bytes

    @classmethod
    def cut(cls, key_id: int, empty_envelope: bytes) -> EnvelopeFrame | None:
        """From an `r` envelope with null `before` and `after`; None if it is not one."""
        body = _HEADER.size
        if empty_envelope[body : body + 2] != b"\x00\x00":
            return None
        return cls(_HEADER.pack(0, key_id), empty_envelope[: body + 1], empty_envelope[body + 2 :])


@dataclass(frozen=True, slots=True)
class EncodedRows:
    """`buf` holds each row's key then value; `ends` the end of each, two per row."""

    buf: bytes
    ends: list[int]
    rows: int
    consumed: int

    def messages(self) -> list[tuple[bytes, bytes]]:
        """(key, value) of each row."""
        buf, ends = self.buf, self.ends
        out = []
        start = 0
        for i in range(0, 2 * self.rows, 2):
            key_end, value_end = ends[i], ends[i + 1]
            out.append((buf[start:key_end], buf[key_end:value_end]))
            start = value_end
        return out


_ESCAPE = re.compile(rb"\\(.)")
_ESCAPED = {b"\\": b"\\", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t"}
_ESCAPED[b"v"] = b"\v"


def parse_copy_line(line: bytes) -> list[str | None]:
    """One line of COPY text output: its fields, unescaped and decoded; None for NULL."""
    fields: list[str | None] = []
    for field in line.split(b"\t"):
        if field == b"\\N":
            fields.append(None)
        elif b"\\" in field:
            fields.append(
                _ESCAPE.sub(lambda m: _ESCAPED.get(m.group(1), m.group(1)), field).decode()
            )
        else:
            fields.append(field.decode())
    return fields
