"""From a consumed Kafka message to a SinkRecord: which topics are change topics of a task,
and the envelope decoded with the table schema recovered from its registry schema (cached
per schema id, so a registry is asked once per schema version)."""

from __future__ import annotations

import re

from consumers.batch import SinkRecord
from schemas.avro_schemas import table_schema_from_value
from schemas.envelope import event_from_record
from schemas.serde import AvroSerde
from schemas.tables import TableSchema
from schemas.topics import STATE_TOPIC, dead_letter_topic, table_from_topic

# Characters librdkafka's regex engine treats specially; escaped one by one (Python's
# re.escape also escapes '-', which librdkafka does not understand).
_REGEX_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


def subscription_pattern(prefix: str) -> str:
    """The regex subscription of a task's change topics: `^<prefix>.<schema>.<table>`."""
    return "^" + _REGEX_SPECIAL.sub(r"\\\1", prefix) + r"\.[^.]+\..+"


def is_change_topic(prefix: str, topic: str) -> bool:
    """Whether `topic` carries a table's changes for the task with topic prefix `prefix`."""
    if topic in (dead_letter_topic(prefix), STATE_TOPIC) or not topic.startswith(prefix + "."):
        return False
    table = table_from_topic(prefix, topic)
    return bool(table.schema and table.name)


class RecordDecoder:
    """Decodes change-topic messages of one task."""

    def __init__(self, prefix: str, serde: AvroSerde) -> None:
        self.prefix = prefix
        self.serde = serde
        self._schemas: dict[tuple[str, int], TableSchema] = {}

    def table_schema(self, topic: str, schema_id: int) -> TableSchema:
        """The TableSchema a value schema of `topic` describes."""
        cached = self._schemas.get((topic, schema_id))
        if cached is None:
            value_schema = self.serde.registry.schema(schema_id)
            cached = table_schema_from_value(value_schema, table_from_topic(self.prefix, topic))
            self._schemas[(topic, schema_id)] = cached
        return cached

    def decode(self, topic: str, partition: int, offset: int, value: bytes | None) -> SinkRecord:
        """The record of one message; a tombstone keeps only its position."""
        if value is None:
            return SinkRecord(topic, partition, offset)
        schema_id, record = self.serde.decode(value)
        schema = self.table_schema(topic, schema_id)
        return SinkRecord(topic, partition, offset, schema, event_from_record(record, schema))
