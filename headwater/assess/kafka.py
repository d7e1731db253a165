"""Kafka and the schema registry: reachable, enough brokers for the replication factor, and
the task's change topics (existing ones, or the broker defaults they will get) with enough
partitions and a retention that holds the estimated snapshot until the sink applies it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from headwater.assess.findings import Finding, failed, one_line, passed, warned
from headwater.assess.tables import TableSize
from headwater.config import TaskConfig
from headwater.preflight import check_registry
from schemas.registry import RegistryError
from schemas.tables import TableId
from schemas.topics import table_topic

AREA = "kafka"
_HOUR_MS = 3_600_000
_BIG_TABLE_ROWS = 10_000_000


def _configs(admin: AdminClient, resource: ConfigResource) -> dict[str, str]:
    future = admin.describe_configs([resource], request_timeout=10)[resource]
    return {name: str(entry.value) for name, entry in future.result(timeout=10).items()}


def _broker_retention(configs: dict[str, str]) -> tuple[int, int]:
    """(retention ms, retention bytes) new topics get from the broker."""
    if configs.get("log.retention.ms") not in (None, "None"):
        ms = int(configs["log.retention.ms"])
    elif configs.get("log.retention.minutes") not in (None, "None"):
        ms = int(configs["log.retention.minutes"]) * 60_000
    else:
        ms = int(configs.get("log.retention.hours", "168")) * _HOUR_MS
    return ms, int(configs.get("log.retention.bytes", "-1"))


def retention_findings(
    subject: str, ms: int, max_bytes: int, partitions: int, size: TableSize | None
) -> list[Finding]:
    found = []
    if ms < 0:
        found.append(passed(AREA, f"{subject} retention", "unlimited time"))
    elif ms < _HOUR_MS:
        found.append(
            failed(
                AREA,
                f"{subject} retention",
                f"{ms / 1000:.0f}s: events may expire before the sink applies them",
                "set retention.ms to days (kafka-configs --alter --add-config retention.ms=...)",
            )
        )
    elif ms < 24 * _HOUR_MS:
        found.append(
            warned(
                AREA,
                f"{subject} retention",
                f"{ms / _HOUR_MS:.1f}h: a sink stopped longer than that loses events",
                "raise retention.ms to a few days",
            )
        )
    else:
        found.append(passed(AREA, f"{subject} retention", f"{ms / _HOUR_MS / 24:.1f} days"))
    if size is not None and max_bytes >= 0 and size.bytes / max(1, partitions) > max_bytes:
        found.append(
            failed(
                AREA,
                f"{subject} retention",
                f"retention.bytes {max_bytes:,} per partition is below the snapshot's "
                f"estimated {size.bytes:,} bytes over {partitions} partition(s)",
                "raise retention.bytes (or -1) or kafka.partitions",
            )
        )
    if size is not None and size.rows_estimate > _BIG_TABLE_ROWS and partitions == 1:
        found.append(
            warned(
                AREA,
                f"{subject} partitions",
                f"one partition for about {size.rows_estimate:,} rows: one sink consumer only",
                "raise kafka.partitions for big tables",
            )
        )
    return found


def _topic_findings(
    admin: AdminClient,
    task: TaskConfig,
    tables: Sequence[TableId],
    sizes: dict[str, TableSize],
    metadata: Any,
) -> list[Finding]:
    broker_id = next(iter(metadata.brokers))
    defaults = _broker_retention(
        _configs(admin, ConfigResource(ConfigResource.Type.BROKER, str(broker_id)))
    )
    found = []
    for table in tables:
        topic = table_topic(task.topic_prefix, table)
        size = sizes.get(str(table))
        if topic not in metadata.topics:
            found.extend(
                retention_findings(
                    f"{topic} (new, broker defaults)", *defaults, task.kafka.partitions, size
                )
            )
            continue
        partitions = len(metadata.topics[topic].partitions)
        configs = _configs(admin, ConfigResource(ConfigResource.Type.TOPIC, topic))
        ms, max_bytes = (
            int(configs.get("retention.ms", "-1")),
            int(configs.get("retention.bytes", "-1")),
        )
        if partitions < task.kafka.partitions:
            found.append(
                warned(
                    AREA,
                    f"{topic} partitions",
                    f"{partitions}, fewer than kafka.partitions {task.kafka.partitions}: "
                    "existing topics are not changed",
                    "add partitions with kafka-topics --alter, or accept the fewer",
                )
            )
        found.extend(retention_findings(topic, ms, max_bytes, partitions, size))
    return found


def assess_kafka(
    task: TaskConfig, tables: Sequence[TableId], sizes: Sequence[TableSize]
) -> list[Finding]:
    found = []
    try:
        check_registry(task)
        found.append(passed(AREA, "schema registry", f"reachable at {task.registry.url}"))
    except RegistryError as exc:
        found.append(failed(AREA, "schema registry", one_line(exc), "fix registry.url"))
    admin = AdminClient(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "socket.connection.setup.timeout.ms": 8000,
        }
    )
    try:
        metadata = admin.list_topics(timeout=8)
    except KafkaException:
        found.append(
            failed(
                AREA,
                "broker",
                f"Kafka at {task.kafka.bootstrap_servers} is unreachable",
                "start it (`headwater stack up`) or fix kafka.bootstrap_servers",
            )
        )
        return found
    brokers = len(metadata.brokers)
    found.append(passed(AREA, "broker", f"{brokers} broker(s) at {task.kafka.bootstrap_servers}"))
    if task.kafka.replication_factor > brokers:
        found.append(
            failed(
                AREA,
                "replication factor",
                f"kafka.replication_factor {task.kafka.replication_factor} > {brokers} broker(s)",
                "lower kafka.replication_factor or add brokers",
            )
        )
    by_name = {s.table: s for s in sizes}
    try:
        found.extend(_topic_findings(admin, task, tables, by_name, metadata))
    except KafkaException as exc:
        found.append(warned(AREA, "topic configs", f"unreadable: {one_line(exc)}"))
    return found
