"""The recheck that keeps a live migration from reporting false differences: rows found
different while CDC runs may only be in flight, so once the task has applied everything the
source had written when the comparison ended (lag zero at the source's current position),
exactly those rows are read again on both sides and compared once more."""

from __future__ import annotations

import time

from headwater.config import TaskConfig
from headwater.validate.result import RowDiff, TableValidation
from headwater.validate.table_check import compare_rows
from headwater.validate.table_side import TableSide


def wait_until_applied(task: TaskConfig, timeout_s: float, poll_s: float = 1.0) -> str | None:
    """Wait until the task's sink has applied every source change up to now. Returns None
    when it has, else why the recheck cannot rely on it."""
    from headwater.status import collect_status, source_wal_lsn

    if task.mode == "full-load":
        return "full-load task: differences are final, no recheck"
    try:
        position = source_wal_lsn(task)
        deadline = time.monotonic() + timeout_s
        while True:
            status = collect_status(task)
            if not status.partitions:
                return "the task has no change topics (never ran): no recheck"
            if status.caught_up_to(position):
                return None
            if time.monotonic() > deadline:
                return (
                    f"lag still {status.total_lag} events after {timeout_s:.0f}s: "
                    "differences may be in flight; run validate again when the task caught up"
                )
            time.sleep(poll_s)
    except Exception as exc:  # Kafka or the state topic unreadable: say so, keep the result
        return f"recheck skipped, task status unreadable: {' '.join(str(exc).split())[:160]}"


def recheck_table(
    src: TableSide,
    dst: TableSide,
    result: TableValidation,
    beyond_cap: list[RowDiff],
    max_rows: int,
) -> None:
    """Read the differing rows again on both sides and keep only those still different."""
    suspects = [*result.rows, *beyond_cap]
    keys = list(dict.fromkeys(d.native_key for d in suspects))
    with src.endpoint.engine.connect() as sconn, dst.endpoint.engine.connect() as dconn:
        mine = src.rows_by_keys(sconn, keys)
        theirs = dst.rows_by_keys(dconn, keys)
    schema = src.schema
    still = compare_rows(mine, theirs, schema.primary_key, schema.column_names)
    result.rechecked = len(keys)
    result.differences = len(still)
    result.rows = still[:max_rows]
    result.source_rows = src.count_all()
    result.target_rows = dst.count_all()
