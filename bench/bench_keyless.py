"""Benchmark: applying a keyless table's changes (docs/keyless-tables.md) against the same
changes to the same table keyed, into PostgreSQL, MariaDB and SQLite, through the sinks'
`apply` (collapsed batches built in memory: no Kafka, so the numbers are the target side).

Phases: a load of `--rows` inserts, then `--updates` updates of random rows (for the keyless
table each is a delete of one matching row plus an insert). Prints rows/s per phase and the
keyless/keyed ratio; asserts nothing.

    .venv/bin/python bench/bench_keyless.py --rows 20000 --updates 2000
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pymysql
from psycopg import sql

from consumers.batch import SinkRecord, collapse
from consumers.sink import target_sink
from headwater.config import TaskConfig
from schemas.envelope import ChangeEvent, Op, Row, SourceInfo
from schemas.tables import Column, TableId, TableSchema

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 5000
COLUMNS = (
    Column("id", "int8", "bigint", nullable=False),
    Column("owner", "varchar", "character varying(40)"),
    Column("amount", "numeric", "numeric(12,2)", precision=12, scale=2),
    Column("notes", "text", "text"),
)


def _row(i: int, version: int) -> Row:
    return {"id": i, "owner": f"owner {i % 97}", "amount": None, "notes": f"v{version} " * 8}


def _events(rows: int, updates: int) -> tuple[list[tuple[Op, Row | None, Row]], int]:
    rng = random.Random(7)
    current = {i: _row(i, 0) for i in range(rows)}
    events: list[tuple[Op, Row | None, Row]] = [("c", None, current[i]) for i in range(rows)]
    for n in range(updates):
        i = rng.randrange(rows)
        new = _row(i, n + 1)
        events.append(("u", current[i], new))
        current[i] = new
    return events, rows


def _run(
    task: TaskConfig, schema: TableSchema, events: list[tuple[Op, Row | None, Row]]
) -> list[float]:
    """Apply `events` in batches; the seconds of the load and of the updates."""
    sink = target_sink(task)
    topic = f"{task.topic_prefix}.public.{schema.table.name}"
    expected: dict[tuple[str, int], int | None] = {(topic, 0): None}
    seconds = [0.0, 0.0]
    try:
        for start in range(0, len(events), BATCH):
            records = []
            for offset, (op, before, after) in enumerate(events[start : start + BATCH], start):
                source = SourceInfo("postgresql", "bench", "db", schema.table, 1)
                event = ChangeEvent(op, source, before, after)
                records.append(SinkRecord(topic, 0, offset, schema, event))
            began = time.perf_counter()
            batch = collapse(records)
            sink.apply(batch, expected)
            seconds[0 if events[start][0] == "c" else 1] += time.perf_counter() - began
            expected[(topic, 0)] = batch.positions[(topic, 0)].next_offset
    finally:
        sink.close()
    return seconds


@contextmanager
def _postgres() -> Iterator[str]:
    name = f"bench_keyless_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def _mariadb() -> Iterator[str]:
    name = f"bench_keyless_{uuid.uuid4().hex[:6]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")  # a generated name
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE `{name}`")
    finally:
        conn.close()


@contextmanager
def _sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/bench.db"


def _task(engine: str, url: str) -> TaskConfig:
    data: dict[str, Any] = {
        "name": f"bench{uuid.uuid4().hex[:8]}",
        "source": {"url": PG_ADMIN},
        "target": {"engine": engine, "url": url},
    }
    if engine == "postgres":
        data["target"]["url"] = url.replace("postgresql://", "postgresql+psycopg://")
    return TaskConfig.model_validate(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=2_000)
    args = parser.parse_args()
    events, rows = _events(args.rows, args.updates)
    print(f"{rows} inserts, then {args.updates} updates of random rows; batches of {BATCH}")
    for engine, database in (("postgres", _postgres), ("mysql", _mariadb), ("sqlite", _sqlite)):
        results = {}
        for kind, key in (("keyed", ("id",)), ("keyless", ())):
            schema = TableSchema(TableId("public", f"t_{kind}"), COLUMNS, key)
            with database() as url:
                results[kind] = _run(_task(engine, url), schema, events)
        for phase, count, i in (("load", rows, 0), ("updates", args.updates, 1)):
            keyed, keyless = results["keyed"][i], results["keyless"][i]
            print(
                f"{engine:8} {phase:8} keyed {count / keyed:10.0f} rows/s   keyless "
                f"{count / keyless:10.0f} rows/s   keyless/keyed {keyed / keyless:6.3f}"
            )


if __name__ == "__main__":
    main()
