"""Writes change events to Kafka: one topic per table, the primary key as the Avro key,
the envelope as the value, a tombstone after each delete, schemas through the registry.

The producer is idempotent with acks=all. `flush()` returns only when Kafka has
acknowledged every event written before it, or raises DeliveryError; a source position is
acknowledged only after such a flush.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from headwater.config import TaskConfig
from producers.errors import DeliveryError
from producers.resume_dedupe import ResumeFilter
from schemas.avro_schemas import key_schema, value_schema
from schemas.envelope import ChangeEvent, envelope_record, key_record
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.tables import TableId, TableSchema
from schemas.topics import key_subject, table_topic, value_subject

log = logging.getLogger(__name__)


class _KnownConfigWarnings(logging.Filter):
    """librdkafka warns on every start that enable.gapless.guarantee is experimental; we
    rely on it knowingly (see producer_config), so that line is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "enable.gapless.guarantee is experimental" not in record.getMessage()


_POLL_EVERY = 100  # events between two polls for delivery reports

_KAFKA_LOG = logging.getLogger("producers.librdkafka")
_KAFKA_LOG.addFilter(_KnownConfigWarnings())


def producer_config(task: TaskConfig) -> dict[str, Any]:
    """Kafka producer settings: no loss, no reordering, good batching."""
    return {
        "bootstrap.servers": task.kafka.bootstrap_servers,
        "enable.idempotence": True,
        # Each partition must hold a prefix of what was sent, with no gap: a restarted
        # producer skips what is at or below a partition's last change (resume_dedupe.py).
        # librdkafka otherwise may fail a batch and go on with later ones (a permanent
        # error, or message.timeout.ms, which gapless does not cover: so no timeout; a
        # flush still gives up after its own timeout).
        "enable.gapless.guarantee": True,
        "message.timeout.ms": 0,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 200_000,
        # Java clients hash keys with murmur2; matching it keeps a row's partition the same
        # whichever client writes it.
        "partitioner": "murmur2_random",
        # Only a failure needs a delivery report (the writer keeps the first one, raised at
        # the next flush; flush itself waits for every message): a report per message cost
        # ~1 us of Python each (measured: 2.7 -> 1.7 CPU-us per produced message).
        "delivery.report.only.error": True,
        "client.id": f"headwater-{task.name}-producer",
        **task.kafka.producer,
    }


class _TableCodec:
    """Schema ids and topic for one table's current shape."""

    def __init__(self, topic: str, schema: TableSchema, key_id: int, value_id: int) -> None:
        self.topic, self.schema, self.key_id, self.value_id = topic, schema, key_id, value_id


class EventWriter:
    """Serializes ChangeEvents and produces them, tracking delivery failures."""

    def __init__(self, task: TaskConfig, registry: SchemaRegistry) -> None:
        self.task = task
        self.prefix = task.topic_prefix
        self.serde = AvroSerde(registry)
        self._producer = Producer(
            {
                **producer_config(task),
                "logger": _KAFKA_LOG,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
            }
        )
        self._admin = AdminClient({"bootstrap.servers": task.kafka.bootstrap_servers})
        self._codecs: dict[TableId, _TableCodec] = {}
        self._failure: KafkaError | None = None
        self.produced = 0
        self._unpolled = 0
        # Set by a restarted producer until its stream passes what Kafka already holds.
        self.resume: ResumeFilter | None = None
        self.codec_changes = 0  # tables whose codec was set or replaced, over the writer's life

    def register_table(self, schema: TableSchema) -> None:
        """Create the table's topic if missing and register its (possibly new) schemas."""
        topic = table_topic(self.prefix, schema.table)
        current = self._codecs.get(schema.table)
        if current is not None and current.schema == schema:
            return
        if current is None:
            self.ensure_topics([topic])
        key_id = self.serde.schema_id(key_subject(topic), key_schema(self.prefix, schema))
        value_id = self.serde.schema_id(value_subject(topic), value_schema(self.prefix, schema))
        self._codecs[schema.table] = _TableCodec(topic, schema, key_id, value_id)
        self.codec_changes += 1

    def ensure_topics(self, topics: list[str], config: dict[str, str] | None = None) -> None:
        """Create topics with the task's partitions; existing ones are left as they are."""
        new = [
            NewTopic(
                t,
                self.task.kafka.partitions,
                self.task.kafka.replication_factor,
                config=config or {},
            )
            for t in topics
        ]
        for topic, future in self._admin.create_topics(new, operation_timeout=30).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise DeliveryError(f"cannot create topic {topic}: {exc}") from None

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and self._failure is None:
            self._failure = err

    def _on_error(self, err: KafkaError) -> None:
        """A fatal error (the producer can send nothing more) fails the next flush. Other
        errors are librdkafka retrying, already in its log."""
        if err.fatal() and self._failure is None:
            self._failure = err

    def _poll(self, timeout: float) -> None:
        """Serve delivery reports (of failures only, see producer_config)."""
        try:
            self._producer.poll(timeout)
        except (KafkaException, SystemError) as exc:
            raise self._delivery_error(exc) from None

    def _delivery_error(self, exc: BaseException | None = None) -> DeliveryError:
        # confluent-kafka 2.16 raises an idempotent producer's fatal error (a record the
        # broker refused under the gapless guarantee) out of poll() and flush(), at times
        # as a SystemError from the delivery report that follows it.
        return DeliveryError(f"Kafka did not acknowledge an event: {self._failure or exc}")

    def _produce(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, **kwargs)
                break
            except BufferError:
                # The local queue is full: let librdkafka send, then try again.
                self._poll(0.1)
        self.produced += 1

    def write(self, event: ChangeEvent) -> None:
        """Produce one event (and a tombstone after a delete)."""
        codec = self._codecs[event.table]
        if self.resume is not None and self._write_resumed(codec, event, self.resume):
            return
        value = self.serde.encode(codec.value_id, envelope_record(event, codec.schema))
        if event.op == "t":
            # A truncate concerns every row, so every partition sees it in its order; the
            # sinks execute it once every partition reached its copy, found by its source
            # position (docs/sink-operations.md).
            for partition in range(self._partitions(codec.topic)):
                self._produce(codec.topic, None, value, partition)
            return
        key_values = event.key(codec.schema)
        key = self.serde.encode(codec.key_id, key_record(key_values or {}, codec.schema))
        self._produce(codec.topic, key, value)
        if event.op == "d":
            self._produce(codec.topic, key, None)
        self._serve_reports()

    def _serve_reports(self) -> None:
        """Serve delivery reports now and then (a failure is seen at the next flush at the
        latest): poll(0) after every event was a tenth of the streaming producer's time."""
        self._unpolled += 1
        if self._unpolled >= _POLL_EVERY:
            self._unpolled = 0
            self._poll(0)

    def codec(self, table: TableId) -> _TableCodec | None:
        """The table's current topic, schema and schema ids (None before it is registered)."""
        return self._codecs.get(table)

    def write_change(self, topic: str, key: bytes, value: bytes, tombstone: bool) -> None:
        """Produce an already-encoded streamed change (and its tombstone after a delete) as
        `write` does (same partitioner: the key's murmur2). Only while `resume` is None:
        the resume filter decides per event, which needs the event."""
        try:
            self._producer.produce(topic, value, key)
            self.produced += 1
        except BufferError:
            self._produce(topic, key, value)  # waits for room in the local queue
        if tombstone:
            self._produce(topic, key, None)
        self._serve_reports()

    def _write_resumed(self, codec: _TableCodec, event: ChangeEvent, resume: ResumeFilter) -> bool:
        """Write `event` where it is not in Kafka yet (see `ResumeFilter`); False when the
        filter has nothing to say about it and `write` goes on as usual."""
        position = resume.position_of(event.source)
        if position is None or codec.topic not in resume.topics:
            return False
        if resume.passed(position):
            log.info(
                "task %s: streamed past what Kafka held before the restart; %d repeated "
                "changes skipped",
                self.task.name,
                resume.skipped,
            )
            self.resume = None
            return False
        value = self.serde.encode(codec.value_id, envelope_record(event, codec.schema))
        if event.op == "t":
            count = self._partitions(codec.topic)
            for partition in resume.truncate_partitions(codec.topic, position, count):
                self._produce(codec.topic, None, value, partition)
            return True
        key_values = event.key(codec.schema)
        key = self.serde.encode(codec.key_id, key_record(key_values or {}, codec.schema))
        # The partition is computed here with the producer's own murmur2 and passed
        # explicitly, so the skip decision and the write agree on it.
        route = resume.route(codec.topic, key, event.op, position)
        if route.write_event:
            self._produce(codec.topic, key, value, route.partition)
        if route.write_tombstone:
            self._produce(codec.topic, key, None, route.partition)
        self._poll(0)
        return True

    def _partitions(self, topic: str) -> int:
        meta = self._producer.list_topics(topic, timeout=10)
        return max(1, len(meta.topics[topic].partitions))

    def table_ids(self, table: TableId) -> tuple[str, int, int]:
        """(topic, key schema id, value schema id) of a registered table."""
        codec = self._codecs[table]
        return codec.topic, codec.key_id, codec.value_id

    def envelope(self, event: ChangeEvent) -> bytes:
        """The encoded value of `event` (its table registered)."""
        codec = self._codecs[event.table]
        return self.serde.encode(codec.value_id, envelope_record(event, codec.schema))

    def write_encoded(self, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        """Produce already-encoded (key, value) snapshot rows: no log position, so nothing
        for the resume filter to decide."""
        produce = self._producer.produce
        for key, value in messages:
            try:
                produce(topic, value, key)
            except BufferError:
                self._produce(topic, key, value)  # waits for room in the local queue
                continue
            self.produced += 1
        self._poll(0)

    def produce_raw(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Produce an already-encoded record (the task's state topic)."""
        self._produce(topic, key, value)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until Kafka acknowledged everything produced so far; raise on any failure."""
        try:
            remaining = self._producer.flush(timeout)
        except (KafkaException, SystemError) as exc:
            raise self._delivery_error(exc) from None
        if self._failure is not None:
            raise self._delivery_error()
        if remaining:
            raise DeliveryError(
                f"{remaining} events still unacknowledged after {timeout:.0f}s; "
                f"is Kafka at {self.task.kafka.bootstrap_servers} up?"
            )

    def close(self) -> None:
        try:
            self._producer.flush(10)
        except (KafkaException, SystemError) as exc:  # a failure flush() already raised
            log.debug("closing the Kafka producer: %s", exc)
