"""A specialised Avro encoder and decoder for the schemas headwater writes.

fastavro is general: for every field it dispatches on the schema at run time, resolves each
union by validating the datum against its branches and looks logical types up in a table.
Our envelopes are records of `["null", T]` unions over a dozen primitive and logical types,
and that generality cost ~35 us to encode and ~30 us to decode one 200-byte row event
(bench/bench_codec.py). Here a parsed schema is compiled once into straight-line Python: one
function per named record, fields read and written in order, the union branch chosen by
`is None`.

The bytes written and the values read are fastavro's own: the logical-type readers are the
ones fastavro uses (including the infinity-aware ones of `schemas.avro_logical`), and a
schema using anything outside the supported set is not compiled (the caller keeps fastavro).
Generated code holds names only as string literals made with `repr`, never as identifiers,
so a schema read from a registry cannot inject code.
"""

from __future__ import annotations

import datetime
import struct
import uuid
from collections.abc import Callable
from decimal import Context, Decimal
from typing import Any

import fastavro._logical_writers_py as fastavro_writers
import fastavro.read

from schemas import avro_logical  # noqa: F401  (installs the infinity-aware readers)
from schemas.pg_types import DATE_INFINITY, TIMESTAMP_INFINITY

Encoder = Callable[[bytearray, Any], None]
Decoder = Callable[[bytes, int], tuple[Any, int]]

_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_EPOCH_NAIVE = datetime.datetime(1970, 1, 1)
_DAYS_SHIFT = datetime.date(1970, 1, 1).toordinal()
_ZIGZAG_MAX = (1 << 64) - 1
# fastavro's own preparers (pure-Python build): the slow path for values off our fast paths.
_PREPARE: dict[str, Callable[[Any, Any], Any]] = fastavro_writers.LOGICAL_WRITERS

# Inline readers for the logical types every envelope carries; the extremes are PostgreSQL's
# infinities (schemas.avro_logical reads them the same way through fastavro).
_INLINE_READERS: dict[str, str] = {
    "long-timestamp-micros": "_EPOCH + _timedelta(microseconds={raw})",
    "long-local-timestamp-micros": "_EPOCH_NAIVE + _timedelta(microseconds={raw})",
    "int-date": "_fromordinal({raw} + _DAYS_SHIFT)",
}
_INFINITIES: dict[str, dict[int, Any]] = {
    "long-timestamp-micros": {int(v): v for v in TIMESTAMP_INFINITY.values()},
    "long-local-timestamp-micros": {int(v): v for v in TIMESTAMP_INFINITY.values()},
    "int-date": {int(v): v for v in DATE_INFINITY.values()},
}


class Unsupported(ValueError):
    """The schema uses an Avro feature this codec does not compile."""


def _write_long(out: bytearray, n: int) -> None:
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        out.append(n)
        return
    if n > _ZIGZAG_MAX:
        raise OverflowError("value does not fit an Avro long")
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _decimal_bytes(value: Any, precision: int, scale: int, context: Context) -> bytes:
    if not isinstance(value, Decimal):
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        raise TypeError(f"{type(value).__name__} is not a decimal")
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or len(digits) > precision or exponent + scale < 0:
        # NaN, infinity, too many digits: fastavro's own path raises its own error.
        schema = {"precision": precision, "scale": scale}
        return bytes(_PREPARE["bytes-decimal"](value, schema))
    unscaled = int(value.scaleb(scale, context))
    return unscaled.to_bytes((abs(unscaled).bit_length() + 8) // 8, "big", signed=True)


def _timestamp_micros(value: Any) -> int:
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        delta = value - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return int(_PREPARE["long-timestamp-micros"](value, None))


def _local_timestamp_micros(value: Any) -> int:
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        delta = value - _EPOCH_NAIVE
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return int(_PREPARE["long-local-timestamp-micros"](value, {}))


def _date_days(value: Any) -> int:
    if isinstance(value, datetime.date):
        return value.toordinal() - _DAYS_SHIFT
    return int(_PREPARE["int-date"](value, None))


# Logical types with a fast path of their own; every other logical type of fastavro goes
# through fastavro's preparer before the base type is written.
_FAST_PREPARE: dict[str, str] = {
    "long-timestamp-micros": "_timestamp_micros",
    "long-local-timestamp-micros": "_local_timestamp_micros",
    "int-date": "_date_days",
}


class _Compiler:
    """Turns one parsed schema into the source of an encoder and a decoder module."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.namespace: dict[str, Any] = {
            "_write_long": _write_long,
            "_read_long": _read_long,
            "_decimal_bytes": _decimal_bytes,
            "_timestamp_micros": _timestamp_micros,
            "_local_timestamp_micros": _local_timestamp_micros,
            "_date_days": _date_days,
            "_pack_float": struct.Struct("<f").pack,
            "_pack_double": struct.Struct("<d").pack,
            "_unpack_float": struct.Struct("<f").unpack_from,
            "_unpack_double": struct.Struct("<d").unpack_from,
            "_UUID": uuid.UUID,
            "_EPOCH": _EPOCH,
            "_EPOCH_NAIVE": _EPOCH_NAIVE,
            "_DAYS_SHIFT": _DAYS_SHIFT,
            "_timedelta": datetime.timedelta,
            "_fromordinal": datetime.date.fromordinal,
            "_from_bytes": int.from_bytes,
        }
        self.functions: dict[str, str] = {}  # record full name -> function name
        self.sources: list[str] = []
        self._counter = 0

    def _name(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}{self._counter}"

    def _constant(self, value: Any, stem: str = "_c") -> str:
        name = self._name(stem)
        self.namespace[name] = value
        return name

    def record(self, schema: dict[str, Any]) -> tuple[str, str]:
        """The (encoder, decoder) function names for a record, compiled once per name."""
        full = schema["name"]
        if full in self.functions:
            return f"_enc_{self.functions[full]}", f"_dec_{self.functions[full]}"
        stem = self._name("r")
        self.functions[full] = stem
        enc, dec = f"_enc_{stem}", f"_dec_{stem}"
        enc_lines = [f"def {enc}(out, d):"]
        dec_lines = [f"def {dec}(data, pos):"]
        values: list[str] = []
        for field in schema["fields"]:
            key = repr(field["name"])
            var = self._name("v")
            if "default" in field:
                default = self._constant(field["default"])
                enc_lines.append(f"    {var} = d.get({key}, {default})")
            else:
                enc_lines.append(f"    {var} = d[{key}]")
            nested = self._resolve(field["type"])
            if isinstance(nested, dict) and nested.get("type") == "record":
                enc_lines.extend(self._encode_memo(nested, var, "    "))
                dec_lines.extend(self._decode_memo(nested, var, "    "))
            else:
                enc_lines.extend(self.encode(field["type"], var, "    "))
                dec_lines.extend(self.decode(field["type"], var, "    "))
            values.append(f"{key}: {var}")
        if len(enc_lines) == 1:
            enc_lines.append("    pass")
        dec_lines.append(f"    return {{{', '.join(values)}}}, pos")
        self.sources.append("\n".join(enc_lines))
        self.sources.append("\n".join(dec_lines))
        return enc, dec

    def _encode_memo(self, schema: dict[str, Any], var: str, ind: str) -> list[str]:
        # A nested record that repeats from event to event (the envelope's `source`) is
        # written from the last bytes when its value is equal. Only for records of strings,
        # integers and booleans, where equal values always have equal bytes (not so for
        # floats: 0.0 == -0.0).
        enc, _ = self.record(schema)
        if not all(self._plain(f["type"]) for f in schema["fields"]):
            return [f"{ind}{enc}(out, {var})"]
        # One holder, its pair swapped whole, so a concurrent caller never sees half of it.
        memo, start, last = self._constant([(None, b"")], "_memo"), self._name("s"), self._name("m")
        return [
            f"{ind}{last} = {memo}[0]",
            f"{ind}if {last}[0] is not None and {var} == {last}[0]:",
            f"{ind}    out += {last}[1]",
            f"{ind}else:",
            f"{ind}    {start} = len(out)",
            f"{ind}    {enc}(out, {var})",
            f"{ind}    {memo}[0] = (dict({var}), bytes(out[{start}:]))",
        ]

    def _plain(self, schema: Any) -> bool:
        if isinstance(schema, list):
            return all(self._plain(branch) for branch in schema)
        return schema in ("null", "boolean", "int", "long", "string")

    def _decode_memo(self, schema: dict[str, Any], var: str, ind: str) -> list[str]:
        # Avro is self-delimiting: the same bytes at `pos` decode to the same value of the
        # same length, so the last decoded value is handed out again (read-only, shared).
        _, dec = self.record(schema)
        memo, start, last = self._constant([(b"", None)], "_memo"), self._name("s"), self._name("m")
        return [
            f"{ind}{last} = {memo}[0]",
            f"{ind}if {last}[0] and data.startswith({last}[0], pos):",
            f"{ind}    {var} = {last}[1]",
            f"{ind}    pos += len({last}[0])",
            f"{ind}else:",
            f"{ind}    {start} = pos",
            f"{ind}    {var}, pos = {dec}(data, pos)",
            f"{ind}    {memo}[0] = (data[{start}:pos], {var})",
        ]

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema not in self.named:
                raise Unsupported(f"unknown named type {schema!r}")
            return self.named[schema]
        return schema

    def encode(self, schema: Any, var: str, ind: str) -> list[str]:
        """Lines that append the encoding of `var` (of `schema`) to `out`."""
        schema = self._resolve(schema)
        if isinstance(schema, list):
            return self._encode_union(schema, var, ind)
        if isinstance(schema, dict):
            kind = schema["type"]
            logical = schema.get("logicalType")
            if kind == "record":
                enc, _ = self.record(schema)
                return [f"{ind}{enc}(out, {var})"]
            if kind == "array":
                item = self._name("i")
                return [
                    f"{ind}if {var}:",
                    f"{ind}    _write_long(out, len({var}))",
                    f"{ind}    for {item} in {var}:",
                    *self.encode(schema["items"], item, ind + "        "),
                    f"{ind}out.append(0)",
                ]
            if logical is not None:
                return self._encode_logical(schema, kind, logical, var, ind)
            if kind in _PRIMITIVES:
                return self.encode(kind, var, ind)
            raise Unsupported(f"type {kind!r}")
        return self._encode_primitive(schema, var, ind)

    def _encode_logical(
        self, schema: dict[str, Any], kind: str, logical: str, var: str, ind: str
    ) -> list[str]:
        if kind == "bytes" and logical == "decimal":
            precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
            context = self._constant(Context(prec=max(precision, 1)))
            raw = self._name("b")
            return [
                f"{ind}{raw} = _decimal_bytes({var}, {precision}, {scale}, {context})",
                f"{ind}_write_long(out, len({raw}))",
                f"{ind}out += {raw}",
            ]
        if kind == "string" and logical == "uuid":
            text = self._name("s")
            return [
                f"{ind}{text} = str({var}) if isinstance({var}, _UUID) else {var}",
                *self._encode_primitive("string", text, ind),
            ]
        key = f"{kind}-{logical}"
        prepared = self._name("p")
        if key in _FAST_PREPARE:
            line = f"{ind}{prepared} = {_FAST_PREPARE[key]}({var})"
        elif key in fastavro_writers.LOGICAL_WRITERS and kind in ("int", "long"):
            writer = self._constant(fastavro_writers.LOGICAL_WRITERS[key])
            line = f"{ind}{prepared} = {writer}({var}, {self._constant(schema)})"
        elif key in fastavro_writers.LOGICAL_WRITERS or kind not in _PRIMITIVES:
            raise Unsupported(f"logical type {key!r}")
        else:
            # Unknown logical types are ignored by Avro readers: the base type is written.
            return self._encode_primitive(kind, var, ind)
        return [line, *self._encode_primitive(kind, prepared, ind)]

    def _encode_union(self, branches: list[Any], var: str, ind: str) -> list[str]:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("unions other than [null, T]")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        return [
            f"{ind}if {var} is None:",
            f"{ind}    out.append({2 * null_index})",
            f"{ind}else:",
            f"{ind}    out.append({2 * (1 - null_index)})",
            *self.encode(other, var, ind + "    "),
        ]

    @staticmethod
    def _long_lines(value: str, ind: str) -> list[str]:
        # Most lengths and many integers are below 64: one byte, no call.
        return [
            f"{ind}if 0 <= {value} < 64:",
            f"{ind}    out.append({value} << 1)",
            f"{ind}else:",
            f"{ind}    _write_long(out, {value})",
        ]

    def _encode_primitive(self, kind: Any, var: str, ind: str) -> list[str]:
        if kind == "null":
            return [f"{ind}if {var} is not None: raise ValueError('null expected')"]
        if kind == "boolean":
            return [f"{ind}out.append(1 if {var} else 0)"]
        if kind in ("int", "long"):
            # Not an int (a float, a Decimal): `<<` raises and the caller falls back to fastavro.
            return self._long_lines(var, ind)
        if kind == "float":
            return [f"{ind}out += _pack_float({var})"]
        if kind == "double":
            return [f"{ind}out += _pack_double({var})"]
        if kind == "string":
            raw = self._name("b")
            size = self._name("n")
            return [
                f"{ind}{raw} = {var}.encode()",
                f"{ind}{size} = len({raw})",
                *self._long_lines(size, ind),
                f"{ind}out += {raw}",
            ]
        if kind == "bytes":
            size = self._name("n")
            return [f"{ind}{size} = len({var})", *self._long_lines(size, ind), f"{ind}out += {var}"]
        raise Unsupported(f"type {kind!r}")

    def decode(self, schema: Any, var: str, ind: str) -> list[str]:
        """Lines that read a value of `schema` at `pos` into `var`, advancing `pos`."""
        schema = self._resolve(schema)
        if isinstance(schema, list):
            if len(schema) != 2 or "null" not in schema:
                raise Unsupported("unions other than [null, T]")
            null_index = schema.index("null")
            branch = self._name("u")
            return [
                f"{ind}{branch} = data[pos]",
                f"{ind}pos += 1",
                f"{ind}if {branch} == {2 * null_index}:",
                f"{ind}    {var} = None",
                f"{ind}elif {branch} == {2 * (1 - null_index)}:",
                *self.decode(schema[1 - null_index], var, ind + "    "),
                f"{ind}else:",
                f"{ind}    raise ValueError('bad union branch')",
            ]
        if isinstance(schema, dict):
            kind = schema["type"]
            logical = schema.get("logicalType")
            if kind == "record":
                _, dec = self.record(schema)
                return [f"{ind}{var}, pos = {dec}(data, pos)"]
            if kind == "array":
                return self._decode_array(schema, var, ind)
            if logical is not None:
                return self._decode_logical(schema, kind, logical, var, ind)
            if kind in _PRIMITIVES:
                return self.decode(kind, var, ind)
            raise Unsupported(f"type {kind!r}")
        return self._decode_primitive(schema, var, ind)

    def _decode_array(self, schema: dict[str, Any], var: str, ind: str) -> list[str]:
        count, item = self._name("n"), self._name("i")
        return [
            f"{ind}{var} = []",
            f"{ind}{count}, pos = _read_long(data, pos)",
            f"{ind}while {count}:",
            f"{ind}    if {count} < 0:",
            f"{ind}        {count} = -{count}",
            f"{ind}        _, pos = _read_long(data, pos)",
            f"{ind}    for _ in range({count}):",
            *self.decode(schema["items"], item, ind + "        "),
            f"{ind}        {var}.append({item})",
            f"{ind}    {count}, pos = _read_long(data, pos)",
        ]

    def _decode_logical(
        self, schema: dict[str, Any], kind: str, logical: str, var: str, ind: str
    ) -> list[str]:
        key = f"{kind}-{logical}"
        reader = fastavro.read.LOGICAL_READERS.get(key)
        if reader is None:
            if kind not in _PRIMITIVES:
                raise Unsupported(f"logical type {key!r}")
            return self._decode_primitive(kind, var, ind)
        if key == "string-uuid":
            return [*self._decode_primitive("string", var, ind), f"{ind}{var} = _UUID({var})"]
        raw = self._name("x")
        if key in _INLINE_READERS:
            extremes = self._constant(_INFINITIES[key])
            found = self._name("f")
            return [
                *self._decode_primitive(kind, raw, ind),
                f"{ind}{found} = {extremes}.get({raw})",
                f"{ind}{var} = {found} if {found} is not None else "
                + _INLINE_READERS[key].format(raw=raw),
            ]
        if key == "bytes-decimal":
            precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
            context = self._constant(Context(prec=max(precision, 1)))
            return [
                *self._decode_primitive(kind, raw, ind),
                f"{ind}{var} = {context}.create_decimal(_from_bytes({raw}, 'big', signed=True))"
                f".scaleb({-scale}, {context})",
            ]
        name = self._constant(reader)
        writer_schema = self._constant(schema)
        return [
            *self._decode_primitive(kind, raw, ind),
            f"{ind}{var} = {name}({raw}, {writer_schema}, None)",
        ]

    def _decode_primitive(self, kind: Any, var: str, ind: str) -> list[str]:
        if kind == "null":
            return [f"{ind}{var} = None"]
        if kind == "boolean":
            return [f"{ind}{var} = data[pos] == 1", f"{ind}pos += 1"]
        if kind in ("int", "long"):
            return [
                f"{ind}{var} = data[pos]",
                f"{ind}if {var} < 0x80:",
                f"{ind}    {var} = ({var} >> 1) ^ -({var} & 1)",
                f"{ind}    pos += 1",
                f"{ind}elif data[pos + 1] < 0x80:",
                f"{ind}    {var} = ({var} & 0x7F) | (data[pos + 1] << 7)",
                f"{ind}    {var} = ({var} >> 1) ^ -({var} & 1)",
                f"{ind}    pos += 2",
                f"{ind}else:",
                f"{ind}    {var}, pos = _read_long(data, pos)",
            ]
        if kind == "float":
            return [f"{ind}{var} = _unpack_float(data, pos)[0]", f"{ind}pos += 4"]
        if kind == "double":
            return [f"{ind}{var} = _unpack_double(data, pos)[0]", f"{ind}pos += 8"]
        if kind in ("string", "bytes"):
            size = self._name("n")
            end = f"pos + {size}"
            convert = ".decode()" if kind == "string" else ""
            return [
                f"{ind}{size} = data[pos]",
                f"{ind}if {size} < 0x80:",
                f"{ind}    {size} >>= 1",
                f"{ind}    pos += 1",
                f"{ind}elif data[pos + 1] < 0x80:",
                f"{ind}    {size} = (({size} & 0x7F) | (data[pos + 1] << 7)) >> 1",
                f"{ind}    pos += 2",
                f"{ind}else:",
                f"{ind}    {size}, pos = _read_long(data, pos)",
                f"{ind}if {end} > len(data): raise ValueError('truncated')",
                f"{ind}{var} = data[pos:{end}]{convert}",
                f"{ind}pos += {size}",
            ]
        raise Unsupported(f"type {kind!r}")


class CompiledCodec:
    """An encoder and a decoder for one record schema (as fastavro.parse_schema returns it)."""

    def __init__(self, parsed: dict[str, Any]) -> None:
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise Unsupported("top-level schema is not a record")
        compiler = _Compiler(dict(parsed.get("__named_schemas", {})))
        enc, dec = compiler.record(parsed)
        code = compile("\n\n".join(compiler.sources), "<headwater avro codec>", "exec")
        exec(code, compiler.namespace)  # our own generated source: see the module docstring
        self._encode: Encoder = compiler.namespace[enc]
        self._decode: Decoder = compiler.namespace[dec]

    def write(self, out: bytearray, record: Any) -> None:
        """Append the Avro encoding of `record` to `out`."""
        self._encode(out, record)

    def read(self, data: bytes, pos: int = 0) -> Any:
        """The record encoded in `data` from `pos`."""
        return self._decode(data, pos)[0]


def compile_codec(parsed: Any) -> CompiledCodec | None:
    """A compiled codec for `parsed`, or None where fastavro must do the work."""
    try:
        return CompiledCodec(parsed)
    except Unsupported:
        return None
