"""The sink processes of a task as Kafka's group coordinator knows them: each member of the
task's consumer group (one per sink worker, told apart by client id) and the partitions it
holds. Asked of Kafka, not of the sinks, so `headwater status` shows them from anywhere."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from headwater.config import TaskConfig


@dataclass(frozen=True, slots=True)
class SinkMember:
    """One sink consumer in the task's group."""

    client_id: str
    host: str
    partitions: list[str] = field(default_factory=list)  # `topic[partition]`


def sink_members(task: TaskConfig, timeout: float = 10.0) -> list[SinkMember]:
    """The members of the task's sink group, by client id; empty when no sink runs."""
    admin = AdminClient({"bootstrap.servers": task.kafka.bootstrap_servers})
    future = admin.describe_consumer_groups([task.sink_group], request_timeout=timeout)[
        task.sink_group
    ]
    try:
        group = future.result()
    except KafkaException:
        return []  # no such group yet
    members = []
    for m in group.members:
        assigned = m.assignment.topic_partitions if m.assignment else []
        names = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        members.append(SinkMember(str(m.client_id), str(m.host), names))
    return sorted(members, key=lambda m: (m.client_id, m.partitions))
