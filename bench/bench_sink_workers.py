"""Benchmark: sink workers and exact truncates. One PostgreSQL target; a topic of three
partitions holding `--events` inserts (with `--truncates` source TRUNCATEs spread through
them, each written to all three partitions as the producer does); applied by one, then by
two sink processes in one group. Prints the apply rate of each case (time from the first
batch committed to the last offset stored, group joins excluded as far as that allows) and
how long a truncate held its partitions on average. Asserts nothing.

    .venv/bin/python bench/bench_sink_workers.py --events 60000 --truncates 10
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import threading
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from consumers.lag import sink_lag
from consumers.offsets import load_offsets
from headwater.cleanup import delete_topics
from headwater.config import TaskConfig
from producers.event_writer import EventWriter
from schemas.envelope import ChangeEvent, SourceInfo
from schemas.registry import SchemaRegistry
from schemas.tables import Column, TableId, TableSchema

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = TableSchema(
    TableId("public", "ledger"),
    (
        Column("id", "int8", "bigint", nullable=False),
        Column("amount", "int8", "bigint"),
        Column("note", "text", "text"),
    ),
    ("id",),
)


def produce(task: TaskConfig, events: int, truncates: int) -> None:
    registry = SchemaRegistry(task.registry.url)
    writer = EventWriter(task, registry)
    writer.register_table(SCHEMA)
    every = events // (truncates + 1) if truncates else events + 1
    for n in range(events):
        source = SourceInfo("postgresql", task.name, "bench", SCHEMA.table, 1, lsn=n + 1)
        if n and n % every == 0:
            writer.write(ChangeEvent("t", source, None, None, 1))
        row = {"id": n, "amount": n * 3, "note": f"row {n}"}
        writer.write(ChangeEvent("c", source, None, row, 1))
    writer.flush()
    writer.close()
    registry.close()


def _sink_child(task_data: dict[str, Any]) -> None:
    from consumers.sink import run_sink

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_sink(TaskConfig.model_validate(task_data), stop)


def apply_with(task: TaskConfig, workers: int) -> float:
    """Seconds from the first committed batch until every partition is applied."""
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_sink_child, args=(task.model_dump(by_alias=True),))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        while not load_offsets(task):
            time.sleep(0.05)
        started = time.monotonic()
        while True:
            lags = sink_lag(task)
            if lags and all(p.lag == 0 for p in lags):
                return time.monotonic() - started
            time.sleep(0.1)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(30)


def run_case(target: str, events: int, truncates: int, workers: int, repeat: int) -> float:
    """The best of `repeat` runs (the machine is shared: the best is the least disturbed)."""
    seconds = min(_one_run(target, events, truncates, workers) for _ in range(repeat))
    rate = events / seconds
    print(
        f"workers {workers}  truncates {truncates:3d}  events {events:,}  "
        f"{seconds:6.2f} s  {rate:10,.0f} events/s  (best of {repeat})"
    )
    return seconds


def _one_run(target: str, events: int, truncates: int, workers: int) -> float:
    name = f"bw{uuid.uuid4().hex[:8]}"
    task = TaskConfig.model_validate(
        {
            "name": name,
            "target": {"url": target, "batch_size": 5000, "batch_wait_s": 0.2},
            "kafka": {"partitions": 3},
        }
    )
    try:
        produce(task, events, truncates)
        return apply_with(task, workers)
    finally:
        for _line in delete_topics(task):
            pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--truncates", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    db = f"bench_workers_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    target = PG_ADMIN.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
    target = f"{target}/{db}"
    try:
        plain = {w: run_case(target, args.events, 0, w, args.repeat) for w in (1, 2)}
        held = {w: run_case(target, args.events, args.truncates, w, args.repeat) for w in (1, 2)}
        for w in (1, 2):
            extra = (held[w] - plain[w]) / max(1, args.truncates)
            print(f"workers {w}: time per truncate barrier {extra * 1000:,.0f} ms (vs none)")
        print(f"two workers vs one, no truncates: x{plain[1] / plain[2]:.2f}")
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )


if __name__ == "__main__":
    main()
