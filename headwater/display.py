"""Renders a TaskStatus for people: full-load progress per table (rows, rows/s, ETA), events
streamed, lag and latency per partition, and the slot's retained WAL."""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.table import Table

from headwater.status import TaskStatus
from producers.postgres.chunks import chunks_finished
from producers.task_state import TableProgress


def _rate_and_eta(rows: int, estimate: int, started_ms: int, finished_ms: int) -> tuple[str, str]:
    if not started_ms:
        return "", ""
    end_ms = finished_ms or int(time.time() * 1000)
    seconds = max(0.001, (end_ms - started_ms) / 1000)
    rate = rows / seconds
    if finished_ms or not rate or estimate <= rows:
        return f"{rate:,.0f}", "done" if finished_ms else ""
    return f"{rate:,.0f}", f"{(estimate - rows) / rate:,.0f}s"


def load_table(status: TaskStatus) -> Table:
    table = Table(title=f"task {status.task}: full load", title_justify="left")
    table.add_column("table", no_wrap=True)
    for header in ("rows", "estimate", "chunks", "rows/s", "ETA"):
        table.add_column(header, justify="right")
    if status.state is None:
        return table
    for name, prog in sorted(status.state.tables.items()):
        rate, eta = _rate_and_eta(prog.rows, prog.estimate, prog.started_ms, prog.finished_ms)
        table.add_row(name, f"{prog.rows:,}", f"{prog.estimate:,}", _chunks(prog), rate, eta)
    return table


def _chunks(prog: TableProgress) -> str:
    """Finished of planned key-range chunks (a chunked PostgreSQL full load), else blank."""
    if not prog.chunks_total:
        return ""
    return f"{chunks_finished(prog.chunks_done)}/{prog.chunks_total}"


def lag_table(status: TaskStatus) -> Table:
    table = Table(title="sink lag per partition", title_justify="left")
    table.add_column("topic", no_wrap=True)
    for header in ("partition", "log end", "applied", "lag", "latency ms"):
        table.add_column(header, justify="right")
    for p in status.partitions:
        latency = "" if p.latency_ms is None else f"{p.latency_ms:,}"
        table.add_row(
            p.topic,
            str(p.partition),
            f"{p.end_offset:,}",
            f"{p.applied_offset:,}",
            f"{p.lag:,}",
            latency,
        )
    return table


def headline(status: TaskStatus) -> str:
    state = status.state
    parts = [f"mode {status.mode}", f"full load {state.snapshot_status if state else 'pending'}"]
    if state:
        parts.append(f"events streamed {state.events_streamed:,}")
        if state.acked_position:
            parts.append(f"source acked {state.acked_position}")
    if status.slot:
        parts.append(f"slot retains {status.slot['retained_wal_bytes']:,} WAL bytes")
    parts.append(f"total lag {status.total_lag:,}")
    if status.dead_letters:
        parts.append(f"dead letters {status.dead_letters:,}")
    if len(status.sinks) > 1:
        parts.append(f"sink workers {len(status.sinks)}")
    return " | ".join(parts)


def sinks_table(status: TaskStatus) -> Table:
    """Each sink process in the task's consumer group, and the stopped tables with why."""
    table = Table(title=f"task {status.task}: sinks", title_justify="left")
    table.add_column("sink (client id)", no_wrap=True)
    table.add_column("partitions")
    for m in status.sinks:
        table.add_row(m.client_id, ", ".join(m.partitions) or "-")
    for t in status.stopped_tables:
        table.add_row(f"[red]stopped[/red] {t.table}", t.reason)
    return table


def render(status: TaskStatus) -> RenderableType:
    parts: list[RenderableType] = [headline(status), load_table(status), lag_table(status)]
    if status.sinks or status.stopped_tables:
        parts.append(sinks_table(status))
    return Group(*parts)
