"""The transform stage: reads a task's raw topics, applies its table mappings and writes the
transformed topics (`<prefix>.transformed.<schema>.<table>`), exactly once: each batch's
output records and its consumer offsets are committed in one Kafka transaction
(consume-transform-produce with `send_offsets_to_transaction`), and the sink reads with
isolation.level=read_committed, so a crash neither loses nor doubles a record.

The task's default transform engine is the faust-streaming app (transforms/faust_app.py);
this loop is the alternative (`transform: {engine: confluent}` in the task file), on
confluent-kafka's transactional producer. More workers (`transform.workers`) scale it out:
each joins the consumer group with its own transactional id (its worker slot), and the group
generation fences a zombie.

A record the rules cannot be applied to goes to `<prefix>.dlq` with the reason in its
headers, in the same transaction."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from headwater.config import TaskConfig
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from transforms.errors import TableMappingError, TransformError
from transforms.load import task_engine
from transforms.outputs import OutputBuilder, transform_group
from transforms.records import OutRecord, RecordTransformer, raw_topic_pattern

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 10.0


def consumer_config(task: TaskConfig) -> dict[str, Any]:
    return {
        "bootstrap.servers": task.kafka.bootstrap_servers,
        "group.id": transform_group(task),
        "client.id": f"headwater-{task.name}-transform",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "topic.metadata.refresh.interval.ms": 2000,  # find new table topics quickly
        "session.timeout.ms": 10_000,
        **task.kafka.consumer,
    }


def producer_config(task: TaskConfig, worker_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": task.kafka.bootstrap_servers,
        "transactional.id": f"headwater-{task.name}-transform-{worker_id}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # murmur2 like the producer and Java clients: one key, one partition, whoever writes.
        "partitioner": "murmur2_random",
        "client.id": f"headwater-{task.name}-transform",
        **task.kafka.producer,
    }


class TransformLoop:
    """One transform worker of one task; `run` until `stop` is set."""

    def __init__(
        self, task: TaskConfig, stop: threading.Event, worker_id: str | None = None
    ) -> None:
        engine = task_engine(task)
        if engine is None:
            raise TableMappingError(f"task {task.name} has no table_mappings; nothing to run")
        self.task = task
        self.stop = stop
        self.prefix = task.topic_prefix
        self.registry = SchemaRegistry(task.registry.url)
        self.transformer = RecordTransformer(
            engine, AvroSerde(self.registry), self.prefix, task.sink_topic_prefix
        )
        self.consumer = Consumer(consumer_config(task))
        # A stable id per worker slot keeps a restarted worker fencing its predecessor.
        worker = worker_id or "0"
        self.producer = Producer(producer_config(task, worker))
        self.outputs = OutputBuilder(task, self.transformer)
        self.consumed = 0
        self.produced = 0
        self._progress_at = time.monotonic()

    def run(self) -> None:
        self.producer.init_transactions(30)
        self.consumer.subscribe([raw_topic_pattern(self.prefix)])
        log.info(
            "task %s: transforming %s.<schema>.<table> into %s.*",
            self.task.name,
            self.prefix,
            self.task.sink_topic_prefix,
        )
        while not self.stop.is_set():
            messages = self.consumer.consume(num_messages=2000, timeout=0.5)
            live = [m for m in messages if self._usable(m)]
            if live:
                self._transaction(live)
            self._log_progress()

    def _usable(self, message: Message) -> bool:
        err = message.error()
        if err is None:
            return True
        if err.fatal():
            raise TransformError(f"task {self.task.name}: Kafka consumer failed: {err.str()}")
        log.warning("task %s: Kafka: %s", self.task.name, err.str())
        return False

    def _transaction(self, messages: list[Message]) -> None:
        records = [out for m in messages for out in self._transform(m)]
        try:
            self.producer.begin_transaction()
            for out in records:
                self._produce(out)
            self.producer.send_offsets_to_transaction(
                _next_offsets(messages), self.consumer.consumer_group_metadata(), 30
            )
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            self._recover(exc)
            return
        self.consumed += len(messages)
        self.produced += len(records)

    def _transform(self, message: Message) -> list[OutRecord]:
        return self.outputs.records(
            str(message.topic()),
            message.partition() or 0,
            message.offset() or 0,
            message.key(),
            message.value(),
        )

    def _produce(self, out: OutRecord) -> None:
        kwargs: dict[str, Any] = {}
        if out.partition is not None:
            kwargs["partition"] = out.partition
        if out.headers:
            kwargs["headers"] = out.headers
        while True:
            try:
                self.producer.produce(out.topic, value=out.value, key=out.key, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.1)

    def _recover(self, exc: KafkaException) -> None:
        """Abort the batch and rewind to the committed offsets; fatal errors (fenced by a
        newer worker with the same id) stop the stage."""
        err: KafkaError = exc.args[0]
        if err.fatal() or not err.txn_requires_abort():
            raise TransformError(
                f"task {self.task.name}: Kafka transaction failed: {err.str()}"
            ) from exc
        log.warning("task %s: aborting a transaction: %s; retrying", self.task.name, err.str())
        self.producer.abort_transaction(30)
        assigned = self.consumer.assignment()
        for tp in self.consumer.committed(assigned, timeout=30):
            self.consumer.seek(
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0)
            )

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._progress_at >= _PROGRESS_EVERY_S:
            log.info(
                "task %s: transformed %d records into %d (%d dropped by rules)",
                self.task.name,
                self.consumed,
                self.produced,
                self.transformer.dropped,
            )
            self._progress_at = now

    def close(self) -> None:
        for closing in (self.consumer.close, self.registry.close):
            try:
                closing()
            except Exception as exc:
                log.warning("task %s: closing the transform stage: %s", self.task.name, exc)


def _next_offsets(messages: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (str(m.topic()), m.partition() or 0)
        last[key] = max(last.get(key, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def run_processor(task: TaskConfig, stop: threading.Event, worker_id: str | None = None) -> None:
    """Run the transform stage of `task` until `stop` is set."""
    loop = TransformLoop(task, stop, worker_id=worker_id)
    try:
        loop.run()
    finally:
        loop.close()
