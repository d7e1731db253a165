"""`headwater snapshot`: ask a task's producer to snapshot tables again while its stream runs
(an incremental snapshot, see producers/postgres/incremental.py). The request travels through
the source's WAL, so it reaches the producer in order, now or when it next runs."""

from __future__ import annotations

from headwater.config import ConfigError, TaskConfig
from producers.postgres import catalog
from producers.postgres.connection import connect
from producers.postgres.incremental import signal_snapshot
from schemas.tables import TableId


def request_snapshot(task: TaskConfig, names: list[str]) -> list[TableId]:
    """Signal the snapshot of `names` (schema.table); they must be selected by the task."""
    if task.mode == "full-load":
        raise ConfigError(
            "incremental snapshots need a streaming task (mode cdc or "
            "full-load-and-cdc); run a full-load task again instead"
        )
    tables = [TableId.parse(name) for name in names]
    with connect(task.source.url) as conn:
        selected = set(catalog.selected_tables(conn, task.tables))
        unknown = [str(t) for t in tables if t not in selected]
        if unknown:
            raise ConfigError(
                f"{', '.join(unknown)}: not a table this task selects; check the name, or add "
                "it to tables.include and run the task again (new tables are loaded then)"
            )
        keyless = [str(t) for t in tables if not catalog.table_key(conn, t)]
        if keyless:
            raise ConfigError(
                f"{', '.join(keyless)}: no primary key, and an incremental snapshot reads a "
                "table in key order; add a primary key (or a REPLICA IDENTITY USING INDEX) first"
            )
        signal_snapshot(conn, task.name, tables)
    return tables
