"""Topic and subject names: `<prefix>.<schema>.<table>`, the Debezium convention, and the
registry's TopicNameStrategy subjects `<topic>-key` / `<topic>-value`."""

from __future__ import annotations

from schemas.tables import TableId


def table_topic(prefix: str, table: TableId) -> str:
    """The change topic of one table."""
    return f"{prefix}.{table.schema}.{table.name}"


def dead_letter_topic(prefix: str) -> str:
    """Where records a sink cannot apply go, with the reason in their headers."""
    return f"{prefix}.dlq"


STATE_TOPIC = "__headwater_state"
"""Compacted topic holding each task's producer progress (snapshot state per table)."""


def key_subject(topic: str) -> str:
    return f"{topic}-key"


def value_subject(topic: str) -> str:
    return f"{topic}-value"


def table_from_topic(prefix: str, topic: str) -> TableId:
    """Invert `table_topic`: `demo.public.orders` -> public.orders."""
    rest = topic.removeprefix(prefix + ".")
    schema, _, name = rest.partition(".")
    return TableId(schema, name)
