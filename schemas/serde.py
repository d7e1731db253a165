"""Avro in the Confluent wire format: a zero magic byte, the 4-byte big-endian schema id,
then the schemaless Avro body (fastavro). Any Kafka client with a schema registry reads it."""

from __future__ import annotations

import io
import os
import struct
from typing import Any

import fastavro

from schemas import avro_logical  # noqa: F401  (installs the infinity-aware readers)
from schemas.avro_codec import CompiledCodec, compile_codec
from schemas.registry import SchemaRegistry

_MAGIC = 0
# HEADWATER_AVRO_CODEC=fastavro turns the compiled codec off (to compare, or to rule it out).
_FASTAVRO_ONLY = os.environ.get("HEADWATER_AVRO_CODEC", "compiled") == "fastavro"
_HEADER = struct.Struct(">bI")


class SerdeError(ValueError):
    """A message is not in the Confluent Avro wire format."""


class AvroSerde:
    """Encodes records under a subject and decodes messages by their embedded schema id."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._parsed: dict[int, Any] = {}
        self._codecs: dict[int, CompiledCodec | None] = {}

    def _parsed_schema(self, schema_id: int, schema: dict[str, Any] | None = None) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            raw = schema if schema is not None else self.registry.schema(schema_id)
            # The hint marks the schema as parsed: without it fastavro parses it again on
            # every schemaless_reader/writer call (measured: half the decode time).
            parsed = fastavro.parse_schema(raw, _write_hint=True)
            self._parsed[schema_id] = parsed
            self._codecs[schema_id] = None if _FASTAVRO_ONLY else compile_codec(parsed)
        return parsed

    def schema_id(self, subject: str, schema: dict[str, Any]) -> int:
        """Register (once) and return the id of `schema` under `subject`."""
        schema_id = self.registry.register(subject, schema)
        self._parsed_schema(schema_id, schema)
        return schema_id

    def encode(self, schema_id: int, record: dict[str, Any]) -> bytes:
        """Encode `record` with the schema registered as `schema_id`."""
        parsed = self._parsed_schema(schema_id)
        codec = self._codecs[schema_id]
        if codec is not None:
            out = bytearray(_HEADER.pack(_MAGIC, schema_id))
            try:
                codec.write(out, record)
                return bytes(out)
            except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
                pass  # an unusual value: fastavro encodes it or raises its own error
        buf = io.BytesIO()
        buf.write(_HEADER.pack(_MAGIC, schema_id))
        fastavro.schemaless_writer(buf, parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[int, dict[str, Any]]:
        """The schema id and the record of one message."""
        if len(data) < _HEADER.size or data[0] != _MAGIC:
            raise SerdeError("message is not Confluent-framed Avro (bad magic byte)")
        _, schema_id = _HEADER.unpack_from(data)
        parsed = self._parsed_schema(schema_id)
        codec = self._codecs[schema_id]
        record: Any = None
        if codec is not None:
            try:
                record = codec.read(data, _HEADER.size)
            except (IndexError, ValueError, UnicodeDecodeError):
                record = None  # malformed: fastavro reads it or raises its own error
        if record is None:
            body = io.BytesIO(data[_HEADER.size :])
            record = fastavro.schemaless_reader(body, parsed, None)
        if not isinstance(record, dict):
            raise SerdeError(f"schema {schema_id} does not describe a record")
        return schema_id, record
