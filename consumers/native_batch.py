"""Which messages of a batch the native path collapses (consumers/native_collapse.py for a
PostgreSQL target's COPY rows, consumers/native_mysql.py for a MySQL/MariaDB target's
LOAD DATA rows), and how those rows join the CollapsedBatch the Python path builds from the
rest.

A topic goes native as a whole or not at all: every partition of it must be taken by the
library, else all its messages are decoded in Python, so a table's staging rows never mix
the two paths' group numbers for one key.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Message

from consumers import native_collapse, native_mysql
from consumers.batch import CollapsedBatch, CopyRows, PartitionPosition, TableChanges, merge_schemas
from consumers.decode import RecordDecoder
from consumers.offsets import Partition
from headwater.config import TaskConfig
from schemas.tables import TableId, TableSchema

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">bI")


class NativeOutput(Protocol):
    """One output format of the library: a plan per envelope schema, and the collapse of a
    partition's messages into rows of that format."""

    def plan(self, schema_id: int, value_schema: dict[str, Any]) -> Any | None: ...

    def collapse(
        self,
        table: TableId,
        plan: Any,
        columns: tuple[str, ...],
        values: list[bytes],
        deleted_group: int,
        upsert_group: int,
    ) -> tuple[CopyRows, int | None] | native_collapse.Fallback: ...


ColumnTypes = Callable[[TableId, tuple[str, ...]], tuple[str, ...] | None]
"""The target's type names of a table's columns, when the target knows them yet."""


class CopyOutput:
    """PostgreSQL COPY rows (consumers/native_collapse.py): binary where `types` gives the
    target's column types and the library writes them, else text."""

    def __init__(self, types: ColumnTypes | None = None) -> None:
        self.types = types

    def plan(self, schema_id: int, value_schema: dict[str, Any]) -> Any | None:
        spec = native_collapse.plan_spec(schema_id, value_schema)
        return None if spec is None else native_collapse.Plan(spec)

    def collapse(
        self,
        table: TableId,
        plan: Any,
        columns: tuple[str, ...],
        values: list[bytes],
        deleted_group: int,
        upsert_group: int,
    ) -> tuple[CopyRows, int | None] | native_collapse.Fallback:
        types = None if self.types is None else self.types(table, columns)
        return native_collapse.collapse(plan, columns, values, deleted_group, upsert_group, types)


class LoadDataOutput:
    """MySQL/MariaDB LOAD DATA text rows (consumers/native_mysql.py)."""

    def plan(self, schema_id: int, value_schema: dict[str, Any]) -> Any | None:
        return native_mysql.plan(schema_id, value_schema)

    def collapse(
        self,
        table: TableId,
        plan: Any,
        columns: tuple[str, ...],
        values: list[bytes],
        deleted_group: int,
        upsert_group: int,
    ) -> tuple[CopyRows, int | None] | native_collapse.Fallback:
        return native_mysql.collapse(plan, columns, values, deleted_group, upsert_group)


@dataclass(slots=True)
class NativePart:
    """One topic's messages of a batch, collapsed by the library."""

    topic: str
    schema: TableSchema
    rows: list[CopyRows] = field(default_factory=list)
    positions: dict[Partition, PartitionPosition] = field(default_factory=dict)
    events: int = 0


class NativeBatcher:
    """Takes the topics the library can collapse out of a batch of messages."""

    def __init__(
        self,
        decoder: RecordDecoder,
        deleted_group: int,
        upsert_group: int,
        output: NativeOutput | None = None,
        accepts: Callable[[TableId], bool] | None = None,
    ) -> None:
        self.decoder = decoder
        self.deleted_group = deleted_group
        self.upsert_group = upsert_group
        self.output: NativeOutput = output or CopyOutput()
        # Whether the target still takes a table's rows natively (a MySQL target learns
        # that a table's column types are not for it on its first native batch).
        self.accepts = accepts
        self._plans: dict[int, Any | None] = {}
        self.taken_events = 0  # collapsed natively, for tests and progress lines
        self.binary_events = 0  # of those, written as binary COPY rows

    def take(self, messages: list[Message]) -> tuple[list[NativePart], list[Message]]:
        """The topics collapsed natively, and the messages left for the Python path (in
        their order, so each partition's stay in offset order)."""
        # One pass, grouped by partition (and so by topic): this runs for every event.
        by_partition: dict[tuple[str, int], list[Message]] = {}
        for m in messages:
            where = (m.topic(), m.partition())
            found = by_partition.get(where)  # type: ignore[arg-type]
            if found is None:
                by_partition[where] = [m]  # type: ignore[index]
            else:
                found.append(m)
        by_topic: dict[str, dict[int, list[Message]]] = {}
        for (topic, partition), partition_messages in by_partition.items():
            by_topic.setdefault(str(topic), {})[partition or 0] = partition_messages
        parts: list[NativePart] = []
        left: set[str] = set()
        tables: set[TableId] = set()
        for topic, partitions in by_topic.items():
            part = self._topic(topic, partitions)
            if part is not None and part.schema.table in tables:
                # Two topics of one table: their native rows would share one staging group
                # whatever their columns; the second goes through Python.
                self.taken_events -= part.events
                part = None
            if part is None:
                left.add(topic)
            else:
                tables.add(part.schema.table)
                parts.append(part)
        rest = [m for m in messages if m.topic() in left] if left else []
        return parts, rest

    def _plan(self, schema_id: int) -> Any | None:
        if schema_id in self._plans:
            return self._plans[schema_id]
        value_schema = self.decoder.serde.registry.schema(schema_id)
        plan = None
        try:
            plan = self.output.plan(schema_id, value_schema)
        except ValueError as exc:  # a mismatch between the two sides: Python decodes
            log.warning("native sink path off for schema %d: %s", schema_id, exc)
        self._plans[schema_id] = plan
        return plan

    def _topic(self, topic: str, partitions: dict[int, list[Message]]) -> NativePart | None:
        first = next(
            (v for ms in partitions.values() for m in ms if (v := m.value()) is not None), None
        )
        if first is None or len(first) < _HEADER.size or first[0] != 0:
            return None  # tombstones only, or not ours: the Python path says what it is
        schema_id = _HEADER.unpack_from(first)[1]
        plan = self._plan(schema_id)
        if plan is None:
            return None
        part = NativePart(topic, self.decoder.table_schema(topic, schema_id))
        if self.accepts is not None and not self.accepts(part.schema.table):
            return None
        for partition, partition_messages in partitions.items():
            values = [v for m in partition_messages if (v := m.value()) is not None]
            result = self.output.collapse(
                part.schema.table,
                plan,
                part.schema.column_names,
                values,
                self.deleted_group,
                self.upsert_group,
            )
            if isinstance(result, native_collapse.Fallback):
                log.debug("native path leaves %s[%d] to Python (%s)", topic, partition, result)
                return None
            rows, max_ts = result
            part.rows.append(rows)
            part.events += len(values)
            self.taken_events += len(values)
            if rows.binary is not None:
                self.binary_events += len(values)
            last = partition_messages[-1].offset() or 0  # a partition's come in order
            part.positions[(topic, partition)] = PartitionPosition(last + 1, max_ts)
        return part


def add_native(batch: CollapsedBatch, parts: list[NativePart]) -> None:
    """Join the natively collapsed topics to `batch`."""
    for part in parts:
        table = batch.tables.get(part.schema.table)
        if table is None:
            table = batch.tables[part.schema.table] = TableChanges(part.schema)
        else:
            table.schema = merge_schemas(table.schema, part.schema)
        table.topics.add(part.topic)
        table.copied.extend(part.rows)
        batch.positions.update(part.positions)
        batch.events += part.events


def native_batcher(
    task: TaskConfig, decoder: RecordDecoder, target: object = None
) -> NativeBatcher | None:
    """The native path of a PostgreSQL or MySQL/MariaDB target, when the library is built
    (else None). `target` (the sink) may say which tables it takes natively
    (`takes_native(table)`) and a PostgreSQL one its column types (`column_types`)."""
    accepts = getattr(target, "takes_native", None)
    if task.target.engine == "mysql" and native_mysql.available():
        from consumers.mysql_load import DELETED_GROUP, UPSERT_GROUP

        return NativeBatcher(decoder, DELETED_GROUP, UPSERT_GROUP, LoadDataOutput(), accepts)
    if task.target.engine != "postgres" or not native_collapse.available():
        return None
    from consumers.postgres_sink import DELETED_GROUP, NATIVE_GROUP

    output = CopyOutput(getattr(target, "column_types", None))
    return NativeBatcher(decoder, DELETED_GROUP, NATIVE_GROUP, output, accepts)
