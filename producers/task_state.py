"""A task's producer progress, kept in a compacted Kafka topic keyed by task name: whether
the full load finished, rows per table, events streamed, the acknowledged source position.

Kafka holds it (not a local file) so a task resumes from any machine, and `headwater status`
reads the same record the producer wrote.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.topics import STATE_TOPIC


@dataclass
class TableProgress:
    rows: int = 0
    estimate: int = 0
    done: bool = False
    started_ms: int = 0
    finished_ms: int = 0
    # The last primary key Kafka acknowledged, for a chunked snapshot that resumes (MySQL).
    last_key: list[Any] | None = None
    # The chunked full load (PostgreSQL): how many key-range chunks the table was split
    # into, and the finished (flushed) ones as merged runs [first, last, lower, upper]
    # (chunk indexes, then the text keys bounding the run; see producers/postgres/chunks.py).
    chunks_total: int = 0
    chunks_done: list[list[Any]] = field(default_factory=list)
    # The table's OID (PostgreSQL), so a rename while the task was stopped is recognised.
    oid: int = 0


@dataclass
class TaskState:
    """What a producer has durably achieved for one task."""

    task: str
    snapshot_status: str = "pending"  # pending | running | done | skipped
    tables: dict[str, TableProgress] = field(default_factory=dict)
    events_streamed: int = 0
    acked_position: str = ""
    updated_ms: int = 0
    # MySQL/MariaDB: the binlog file, pos and gtid streaming resumes from.
    binlog: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TaskState:
        data: dict[str, Any] = json.loads(raw)
        tables = {k: TableProgress(**v) for k, v in data.pop("tables", {}).items()}
        return cls(tables=tables, **data)


class TaskStateStore:
    """Reads and writes TaskState records in the state topic."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap = bootstrap_servers
        self._producer: Producer | None = None
        self._failed: KafkaError | None = None

    def ensure_topic(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        topic = NewTopic(STATE_TOPIC, 1, 1, config={"cleanup.policy": "compact"})
        for future in admin.create_topics([topic], operation_timeout=30).values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def save(self, state: TaskState, wait: bool = True) -> None:
        """Write `state`; with `wait`, return once Kafka has it (and every earlier one).

        `wait=False` is for periodic saves on a hot path: the record is queued (its content
        fixed now) and delivered in the background, in order before any later save; a
        delivery failure raises at the next save."""
        if self._producer is None:
            self._producer = Producer(
                {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all"}
            )
        self._raise_failed()
        state.updated_ms = int(time.time() * 1000)
        self._producer.produce(
            STATE_TOPIC, key=state.task.encode(), value=state.to_json(), on_delivery=self._sent
        )
        if not wait:
            self._producer.poll(0)
            return
        if self._producer.flush(30):
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "state not acknowledged"))
        self._raise_failed()

    def _sent(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None and self._failed is None:
            self._failed = err

    def _raise_failed(self) -> None:
        if self._failed is not None:
            err, self._failed = self._failed, None
            raise KafkaException(err)

    def load(self, task: str, timeout: float = 10.0) -> TaskState | None:
        """The latest state of `task`, or None when it never ran."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"headwater-state-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            return _read_latest(consumer, task.encode(), timeout)
        finally:
            consumer.close()

    def delete(self, task: str) -> None:
        """Forget `task` (a tombstone), used by `headwater cleanup`."""
        if self._producer is None:
            self._producer = Producer({"bootstrap.servers": self.bootstrap})
        self._producer.produce(STATE_TOPIC, key=task.encode(), value=None)
        self._producer.flush(30)


def _read_latest(consumer: Consumer, key: bytes, timeout: float) -> TaskState | None:
    meta = consumer.list_topics(STATE_TOPIC, timeout=timeout)
    if STATE_TOPIC not in meta.topics or meta.topics[STATE_TOPIC].error is not None:
        return None
    low, high = consumer.get_watermark_offsets(TopicPartition(STATE_TOPIC, 0), timeout=timeout)
    if high <= low:
        return None
    consumer.assign([TopicPartition(STATE_TOPIC, 0, low)])
    latest: bytes | None = None
    deadline = time.monotonic() + timeout
    position = low
    while position < high and time.monotonic() < deadline:
        # A short wait: consume() holds out for all 500 unless it times out, and the
        # last batch is short (a compacted topic has gaps below `high`).
        for msg in consumer.consume(500, timeout=0.05):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    position = high  # compacted away at the end: nothing more to read
                continue
            position = (msg.offset() or 0) + 1
            if msg.key() == key:
                latest = msg.value()
    return TaskState.from_json(latest) if latest else None
