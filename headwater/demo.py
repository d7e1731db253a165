"""`headwater demo`: the local stack, a sample PostgreSQL database, a full-load-and-cdc task
into a second database while changes stream in, and a report that compares every row."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from headwater.cleanup import cleanup_task
from headwater.compare import TableComparison, compare_task
from headwater.config import TaskConfig, load_task
from headwater.display import render
from headwater.runner import TaskRunner
from headwater.sample_db import Workload, WorkloadCounts, create_sample, recreate_database
from headwater.status import TaskStatus, collect_status
from producers.postgres.connection import connect
from producers.task_state import TaskStateStore

DEMO_TASK = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"


def demo_task(urls: dict[str, str]) -> TaskConfig:
    """The demo task: examples/demo.yaml when present, pointed at the running stack."""
    base = load_task(DEMO_TASK) if DEMO_TASK.exists() else TaskConfig(name="demo")
    data = base.model_dump(by_alias=True)
    data["source"]["url"] = urls["source"]
    data["target"]["url"] = urls["target"]
    data["kafka"]["bootstrap_servers"] = urls["kafka"]
    data["registry"]["url"] = urls["registry"]
    return TaskConfig.model_validate(data)


def _stack_urls(console: Console) -> dict[str, str]:
    from headwater.stack import manager

    console.print("starting the local stack (Kafka, schema registry, PostgreSQL)...")
    manager.up(["kafka", "registry", "postgres"])
    found = {s.name: s.urls for s in manager.status(["kafka", "registry", "postgres"])}
    pg_source = found["postgres"]["source_url"].rsplit("/", 1)[0]
    pg_target = found["postgres"]["target_url"].rsplit("/", 1)[0]
    return {
        "admin": pg_source + "/postgres",
        "source": pg_source + "/demo_source",
        "target": pg_target + "/demo_target",
        "kafka": found["kafka"]["bootstrap_servers"],
        "registry": found["registry"]["registry_url"],
    }


def prepare(task: TaskConfig, admin_url: str, customers: int, console: Console) -> None:
    """Fresh sample source, empty target, and nothing left of an earlier demo run."""
    with connect(admin_url) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = 'demo_source'").fetchone()
    if exists:
        for _line in cleanup_task(task, topics=True):
            pass
    with connect(admin_url) as admin:
        recreate_database(admin, "demo_source")
        recreate_database(admin, "demo_target")
    with connect(task.source.url) as conn:
        create_sample(conn, customers)
    console.print(f"created sample database demo_source ({customers} customers)")


def _report(
    comparisons: list[TableComparison],
    status: TaskStatus,
    counts: WorkloadCounts,
    elapsed: float,
    console: Console,
) -> bool:
    table = Table(title="demo report", title_justify="left")
    table.add_column("table", no_wrap=True)
    for header in ("source rows", "target rows", "missing", "extra", "different", "match"):
        table.add_column(header, justify="right")
    for c in comparisons:
        table.add_row(
            str(c.table),
            f"{c.source_rows:,}",
            f"{c.target_rows:,}",
            str(len(c.missing)),
            str(len(c.extra)),
            str(len(c.different)),
            "[green]yes[/green]" if c.matches else "[red]NO[/red]",
        )
    console.print(table)
    streamed = status.state.events_streamed if status.state else 0
    console.print(
        f"changes written during the run: {counts.total} ({counts.inserts} inserts, "
        f"{counts.updates} updates of which {counts.key_changes} primary-key changes, "
        f"{counts.deletes} deletes); change events streamed: {streamed}; "
        f"lag at the end: {status.total_lag}; time: {elapsed:.1f}s"
    )
    ok = all(c.matches for c in comparisons)
    console.print("[green]every row matches[/green]" if ok else "[red]rows differ[/red]")
    return ok


def run_demo(rows: int, changes: int, console: Console) -> int:
    """The whole demo; the exit code."""
    urls = _stack_urls(console)
    task = demo_task(urls)
    prepare(task, urls["admin"], rows, console)
    started = time.monotonic()
    runner = TaskRunner(task, log_level=logging.WARNING)
    runner.start()
    counts = WorkloadCounts()
    writer = threading.Thread(target=_write_changes, args=(task, changes, counts), daemon=True)
    try:
        with Live(console=console, refresh_per_second=2) as live:
            writer.start()
            runner.wait_caught_up(600, on_status=lambda s: live.update(render(s)))
            writer.join()
            status = runner.wait_caught_up(600, on_status=lambda s: live.update(render(s)))
    finally:
        runner.stop()
    console.print()
    status = collect_status(task)  # after the stop: the producer's final counts
    comparisons = compare_task(task)
    ok = _report(comparisons, status, counts, time.monotonic() - started, console)
    # An idle replication slot keeps every WAL segment written after it (one left by a
    # demo held 16 GB on this machine a day later): drop it; the databases stay to look at.
    for _line in cleanup_task(task, topics=True):
        pass
    console.print("dropped the demo's replication slot and topics; its databases stay")
    return 0 if ok else 1


def _write_changes(task: TaskConfig, changes: int, counts: WorkloadCounts) -> None:
    store = TaskStateStore(task.kafka.bootstrap_servers)
    deadline = time.monotonic() + 120
    # Start once the full load has begun, and pace the writes so they land during the load
    # and after it: both paths must carry them.
    while time.monotonic() < deadline:
        state = store.load(task.name)
        if state is not None and state.snapshot_status != "pending":
            break
        time.sleep(0.2)
    with connect(task.source.url) as conn:
        done = Workload(conn).run(changes, pause_s=0.01)
    counts.inserts, counts.updates = done.inserts, done.updates
    counts.deletes, counts.key_changes = done.deletes, done.key_changes
