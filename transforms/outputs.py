"""What both transform engines (the faust app and the confluent loop) do around the rules:
turn a raw message into output records, sending one the rules cannot handle to the task's
dead-letter topic with the reason in its headers, and create output topics before their
first record."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from headwater.config import TaskConfig
from schemas.topics import dead_letter_topic
from transforms.errors import TransformError
from transforms.evaluate import EvaluationError
from transforms.records import OutRecord, RecordTransformer

log = logging.getLogger(__name__)


def transform_group(task: TaskConfig) -> str:
    """The consumer group of the transform stage (its offsets are the stage's progress)."""
    return f"headwater-{task.name}-transform"


class OutputTopics:
    """Creates the output topics of a task once each (partitions as the task's raw ones)."""

    def __init__(self, task: TaskConfig) -> None:
        self.task = task
        self.admin = AdminClient({"bootstrap.servers": task.kafka.bootstrap_servers})
        self.known: set[str] = set()

    def ensure(self, topics: Iterable[str]) -> None:
        new = [t for t in topics if t not in self.known]
        if not new:
            return
        kafka = self.task.kafka
        specs = [NewTopic(t, kafka.partitions, kafka.replication_factor) for t in new]
        for topic, future in self.admin.create_topics(specs, operation_timeout=30).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TransformError(f"cannot create topic {topic}: {exc}") from None
        self.known.update(new)


class OutputBuilder:
    """The output records of one raw message, creating the topics they go to."""

    def __init__(self, task: TaskConfig, transformer: RecordTransformer) -> None:
        self.task = task
        self.transformer = transformer
        self.topics = OutputTopics(task)

    def records(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> list[OutRecord]:
        out = self._transform(topic, partition, offset, key, value)
        self.topics.ensure(self.transformer.new_topics)
        self.transformer.new_topics.clear()
        return out

    def _transform(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> list[OutRecord]:
        try:
            return self.transformer.transform(topic, partition, value)
        except (TransformError, EvaluationError, ValueError) as exc:
            # ValueError: fastavro refusing a value (e.g. a NULL key column), a bad message.
            reason = f"{type(exc).__name__}: {exc}"
            log.warning(
                "task %s: %s[%d]@%s to the dead-letter topic: %s",
                self.task.name,
                topic,
                partition,
                offset,
                reason,
            )
            headers = {
                "headwater.error": reason.encode(),
                "headwater.topic": topic.encode(),
                "headwater.partition": str(partition).encode(),
                "headwater.offset": str(offset).encode(),
                "headwater.stage": b"transform",
            }
            dlq = dead_letter_topic(self.task.topic_prefix)
            self.topics.ensure([dlq])
            return [OutRecord(dlq, key, value, headers=headers)]
