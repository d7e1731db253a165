"""`headwater cleanup`: remove what a task left in the source (replication slot,
publication), in Kafka (its progress record, optionally its topics) and in the target
(optionally its stored offsets). Safe to run twice; refuses while the task streams."""

from __future__ import annotations

from collections.abc import Iterator

from confluent_kafka.admin import AdminClient
from psycopg import sql

from headwater.config import TaskConfig
from producers.errors import SourceError
from producers.postgres.connection import connect
from producers.postgres.replication import drop_slot, slot_info
from producers.task_state import TaskStateStore


def _source(task: TaskConfig) -> Iterator[str]:
    with connect(task.source.url) as conn:
        info = slot_info(conn, task.slot_name)
        if info is not None:
            if info["active"]:
                raise SourceError(
                    f"replication slot {task.slot_name} is in use: stop the task first"
                )
            drop_slot(conn, task.slot_name)
            yield f"dropped replication slot {task.slot_name}"
        exists = conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (task.publication,)
        ).fetchone()
        if exists:
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(task.publication)))
            yield f"dropped publication {task.publication}"


def delete_topics(task: TaskConfig) -> Iterator[str]:
    """Delete the task's topics (`<prefix>.*`); yields one line per topic."""
    admin = AdminClient({"bootstrap.servers": task.kafka.bootstrap_servers})
    prefix = task.topic_prefix + "."
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if not names:
        return
    for topic, future in admin.delete_topics(names, operation_timeout=30).items():
        future.result()
        yield f"deleted topic {topic}"


def cleanup_task(task: TaskConfig, topics: bool = False, target: bool = False) -> Iterator[str]:
    """Undo the task's footprint; yields one line per thing removed."""
    if task.source.engine == "mysql":
        # A binlog reader keeps no state in the server; its position lives in the state topic.
        yield "nothing to drop in the MySQL source"
    else:
        yield from _source(task)
    TaskStateStore(task.kafka.bootstrap_servers).delete(task.name)
    yield f"forgot the progress of task {task.name}"
    if topics:
        yield from delete_topics(task)
    if target:
        from consumers.offsets import forget_offsets

        removed = forget_offsets(task)
        yield f"forgot {removed} stored sink offsets in the target"
