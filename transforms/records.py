"""From a raw change-topic message to the messages of the transformed topics: decode the
envelope (table schema recovered from its registry schema), apply the rules, register the
transformed schemas under the output topics' subjects and encode. Kafka I/O stays in the
processor; this only maps bytes to bytes.

A raw tombstone is dropped: a tombstone carrying the transformed key follows each delete
that the rules let through, as the producer does for raw topics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.avro_schemas import key_schema, table_schema_from_value, value_schema
from schemas.envelope import ChangeEvent, envelope_record, event_from_record, key_record
from schemas.serde import AvroSerde
from schemas.tables import TableId, TableSchema
from schemas.topics import key_subject, table_from_topic, table_topic, value_subject
from transforms.engine import MappingEngine, TablePlan

RAW_REGEX_SPECIAL = "\\.^$*+?()[]{}|"


def raw_topic_pattern(prefix: str) -> str:
    """The regex subscription of a task's raw topics, `<prefix>.<schema>.<table>` exactly
    (the transformed topics, `<prefix>.transformed.<schema>.<table>`, have one part more)."""
    escaped = "".join("\\" + c if c in RAW_REGEX_SPECIAL else c for c in prefix)
    return "^" + escaped + r"\.[^.]+\.[^.]+$"


def is_raw_topic(prefix: str, topic: str) -> bool:
    rest = topic.removeprefix(prefix + ".")
    return rest != topic and rest.count(".") == 1 and rest != "dlq"


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: dict[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class _OutCodec:
    topic: str
    schema: TableSchema
    key_id: int
    value_id: int


class RecordTransformer:
    """Transforms raw messages of one task; schemas are looked up and registered once."""

    def __init__(self, engine: MappingEngine, serde: AvroSerde, prefix: str, out_prefix: str):
        self.engine = engine
        self.serde = serde
        self.prefix = prefix
        self.out_prefix = out_prefix
        self._sources: dict[tuple[str, int], TableSchema] = {}
        self._codecs: dict[TableSchema, _OutCodec | None] = {}
        self.new_topics: list[str] = []  # output topics seen for the first time
        self.dropped = 0

    def source_schema(self, topic: str, schema_id: int) -> TableSchema:
        cached = self._sources.get((topic, schema_id))
        if cached is None:
            value = self.serde.registry.schema(schema_id)
            cached = table_schema_from_value(value, table_from_topic(self.prefix, topic))
            self._sources[(topic, schema_id)] = cached
        return cached

    def output_topic(self, plan: TablePlan) -> str:
        return plan.topic or table_topic(self.out_prefix, plan.schema.table)

    def _codec(self, source: TableSchema) -> tuple[TablePlan, _OutCodec] | None:
        plan = self.engine.plan(source)
        if plan is None:
            return None
        codec = self._codecs.get(source)
        if codec is None:
            topic = self.output_topic(plan)
            key_id = self.serde.schema_id(
                key_subject(topic), key_schema(self.out_prefix, plan.schema)
            )
            value_id = self.serde.schema_id(
                value_subject(topic), value_schema(self.out_prefix, plan.schema)
            )
            codec = _OutCodec(topic, plan.schema, key_id, value_id)
            self._codecs[source] = codec
            self.new_topics.append(topic)
        return plan, codec

    def transform(self, topic: str, partition: int, value: bytes | None) -> list[OutRecord]:
        """The output messages of one raw message (none when a rule drops it)."""
        if value is None:
            return []
        schema_id, record = self.serde.decode(value)
        source = self.source_schema(topic, schema_id)
        found = self._codec(source)
        if found is None:
            self.dropped += 1
            return []
        plan, codec = found
        event = plan.apply(event_from_record(record, source))
        if event is None:
            self.dropped += 1
            return []
        return self._encode(event, codec, partition)

    def _encode(self, event: ChangeEvent, codec: _OutCodec, partition: int) -> list[OutRecord]:
        value = self.serde.encode(codec.value_id, envelope_record(event, codec.schema))
        if event.op == "t":
            # The producer wrote the truncate to every raw partition; pass each copy on to
            # the same partition number.
            return [OutRecord(codec.topic, None, value, partition)]
        key_values: dict[str, Any] = event.key(codec.schema) or {}
        key = self.serde.encode(codec.key_id, key_record(key_values, codec.schema))
        out = [OutRecord(codec.topic, key, value)]
        if event.op == "d":
            out.append(OutRecord(codec.topic, key, None))
        return out

    def output_tables(self) -> dict[str, TableId]:
        return {c.topic: c.schema.table for c in self._codecs.values() if c is not None}
