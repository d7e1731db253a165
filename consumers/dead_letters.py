"""The dead-letter topic `<prefix>.dlq`: a record the target refused is written there with
its original value (bytes unchanged, so any Avro reader decodes it) and the reason in its
headers: `headwater.error`, `headwater.table`, `headwater.topic`, `headwater.partition`,
`headwater.offset`, and `headwater.key` (the original key bytes). Its key is its origin,
`<topic>/<partition>/<offset>`. Delivery is waited for before the batch commits, so a crash
never loses one; a crash between that and the commit writes it again when the batch is
applied again, with the same key: DLQ readers dedupe by key (docs/sink-operations.md)."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import KafkaException, Producer

from consumers.batch import Origin
from consumers.outcome import Rejected
from headwater.config import TaskConfig
from schemas.topics import dead_letter_topic

RawMessage = tuple[bytes | None, bytes | None]
"""A consumed message's key and value bytes."""

_FLUSH_TIMEOUT_S = 30.0


def origin_key(topic: str, partition: int, offset: int) -> bytes:
    """The key of a dead-letter record: where the refused record was read. A record written
    twice (a crash before the batch committed) has the same key both times."""
    return f"{topic}/{partition}/{offset}".encode()


class DeadLetterWriter:
    """Writes refused records of one task to its dead-letter topic."""

    def __init__(self, task: TaskConfig) -> None:
        self.topic = dead_letter_topic(task.topic_prefix)
        self.written = 0
        self._producer = Producer(
            {
                "bootstrap.servers": task.kafka.bootstrap_servers,
                "client.id": f"headwater-{task.name}-dlq",
                "enable.idempotence": True,
                "acks": "all",
                **task.kafka.producer,
            }
        )
        self._errors: list[str] = []

    def write(self, rejected: list[Rejected], raw: Mapping[Origin, RawMessage]) -> None:
        """Send each refused record and wait until Kafka has them all."""
        for r in rejected:
            key, value = raw.get(r.origin, (None, None)) if r.origin else (None, None)
            topic, partition, offset = r.origin or ("", -1, -1)
            headers: list[tuple[str, str | bytes | None]] = [
                ("headwater.error", r.reason.encode()),
                ("headwater.table", str(r.table).encode()),
                ("headwater.topic", topic.encode()),
                ("headwater.partition", str(partition).encode()),
                ("headwater.offset", str(offset).encode()),
                ("headwater.key", key),
            ]
            self._producer.produce(
                self.topic,
                key=origin_key(topic, partition, offset),
                value=value,
                headers=headers,
                on_delivery=self._delivered,
            )
        left = self._producer.flush(_FLUSH_TIMEOUT_S)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(
                f"dead-letter topic {self.topic}: {left} record(s) undelivered "
                f"{'; '.join(errors[:3])}"
            )
        self.written += len(rejected)

    def _delivered(self, err: object, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def close(self) -> None:
        self._producer.flush(5)
