"""Benchmark: the sink's apply rate from change events already in Kafka (inserts, then
updates and deletes of random keys), into PostgreSQL and into MariaDB, each against
baselines measured in the same run on the same net rows:

- PostgreSQL: one server-side `INSERT ... SELECT ... ON CONFLICT DO UPDATE` from an
  already-loaded staging table (the floor for any sink);
- MariaDB: `LOAD DATA LOCAL INFILE` into a staging table plus
  `INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`;
- both: a naive loop of one upsert or delete statement per event (on a sample, commit every
  1000), to show what batching buys.

The sink runs in a child process from an empty target until every event is applied; its
time starts at its first batch (group join excluded) and its peak RSS is reported. With
`--workers N` the events go to N partitions and N sink processes of one group apply them
(`kafka.partitions` and `target.workers` of a task), each its own partitions in its own
transactions. Prints numbers; asserts nothing.

    .venv/bin/python bench/bench_sink.py --events 200000
    .venv/bin/python bench/bench_sink.py --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import re
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from psycopg import sql

from consumers.local_infile import allowed
from consumers.sink import SinkLoop
from headwater.cleanup import delete_topics
from headwater.config import TaskConfig
from headwater.gc_tuning import tune_gc
from producers.event_writer import EventWriter
from schemas.envelope import ChangeEvent, SourceInfo
from schemas.registry import SchemaRegistry
from schemas.tables import Column, TableId, TableSchema

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARIADB = ("127.0.0.1", 3306, "root")

SCHEMA = TableSchema(
    TableId("public", "accounts"),
    (
        Column("id", "int8", "bigint", nullable=False),
        Column("owner", "varchar", "character varying(40)"),
        Column("balance", "numeric", "numeric(12,2)", precision=12, scale=2),
        Column("updated", "timestamptz", "timestamp with time zone"),
        Column("notes", "text", "text"),
    ),
    ("id",),
)
COLUMNS = SCHEMA.column_names
PG_DDL = (
    "id bigint PRIMARY KEY, owner varchar(40), balance numeric(12,2), "
    "updated timestamptz, notes text"
)
MY_DDL = (
    "id BIGINT PRIMARY KEY, owner VARCHAR(40), balance DECIMAL(12,2), "
    "updated DATETIME(6), notes LONGTEXT"
)

Event = tuple[str, int, dict[str, Any] | None]


def make_events(count: int, seed: int = 7) -> tuple[list[Event], dict[int, dict[str, Any]]]:
    """70% inserts of new keys, then 25% updates and 5% deletes of random keys; and the net
    rows they leave."""
    rng = random.Random(seed)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    inserts = int(count * 0.7)
    events: list[Event] = []
    net: dict[int, dict[str, Any]] = {}

    def row(key: int, version: int) -> dict[str, Any]:
        return {
            "id": key,
            "owner": f"owner {key} v{version}",
            "balance": Decimal(rng.randint(0, 10**8)).scaleb(-2),
            "updated": base + timedelta(seconds=key, microseconds=version),
            "notes": "notes " * (key % 5) or None,
        }

    for key in range(inserts):
        events.append(("c", key, net.setdefault(key, row(key, 0))))
    for i in range(count - inserts):
        key = rng.randrange(inserts)
        if i % 6 == 5:
            events.append(("d", key, None))
            net.pop(key, None)
        else:
            net[key] = row(key, i + 1)
            events.append(("u", key, net[key]))
    return events, net


def produce(task: TaskConfig, events: list[Event]) -> float:
    registry = SchemaRegistry(task.registry.url)
    writer = EventWriter(task, registry)
    writer.register_table(SCHEMA)
    started = time.perf_counter()
    for n, (op, key, after) in enumerate(events):
        source = SourceInfo("postgresql", task.name, "bench", SCHEMA.table, 1, lsn=n)
        before = {"id": key} if op == "d" else None
        writer.write(ChangeEvent(op, source, before, after, 1))  # type: ignore[arg-type]
    writer.flush()
    elapsed = time.perf_counter() - started
    writer.close()
    registry.close()
    return elapsed


def _sink_child(task_data: dict[str, Any], slot: int, first: Any, applied: Any, done: Any) -> None:
    """One sink process: when it began applying its first batch of events (CLOCK_MONOTONIC,
    the same in every process) and its applied events go to the shared arrays at `slot`
    until `done`."""
    task = TaskConfig.model_validate(task_data)
    tune_gc()  # as in a stage process (headwater/stages.py)
    stop = threading.Event()
    loop = SinkLoop(task, stop)
    apply = loop.target.apply

    def timed_apply(batch: Any, *args: Any, **kwargs: Any) -> Any:
        # From the first batch with events: the apply that creates the tables on assignment
        # comes before the consumer's first fetch (~0.3 s here), which is not apply time.
        if not first[slot] and batch.events:
            first[slot] = time.monotonic()
        return apply(batch, *args, **kwargs)

    loop.target.apply = timed_apply  # type: ignore[method-assign]
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    while not done.is_set() and thread.is_alive():
        applied[slot] = loop.events_applied
        time.sleep(0.01)
    stop.set()
    thread.join(30)
    loop.close()


def _peak_rss_mb(pid: int) -> float:
    # VmHWM, not ru_maxrss: the latter keeps the RSS of the forked parent (which holds
    # every generated event) across the exec of a spawned child.
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.findall(r"VmHWM:\s+(\d+)", status)[0]) / 1024


def run_sink(task: TaskConfig, events: int) -> tuple[float, int, float]:
    """(seconds from the first batch any sink process applies to the last event applied, events
    applied, peak RSS of the largest process) for `task.target.workers` processes."""
    ctx = mp.get_context("spawn")
    workers = task.target.workers
    first: Any = ctx.Array("d", workers)
    applied: Any = ctx.Array("q", workers)
    done = ctx.Event()
    procs = [
        ctx.Process(
            target=_sink_child, args=(task.model_dump(by_alias=True), n, first, applied, done)
        )
        for n in range(workers)
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 3600
    while sum(applied) < events and time.monotonic() < deadline:
        time.sleep(0.01)
    ended = time.monotonic()
    rss = max(_peak_rss_mb(proc.pid) for proc in procs if proc.pid is not None)
    done.set()
    for proc in procs:
        proc.join(60)
    started = min(t for t in first if t)
    return ended - started, sum(applied), rss


# --- PostgreSQL baselines ---------------------------------------------------------------------


def pg_baseline(url: str, net: dict[int, dict[str, Any]]) -> float:
    """Seconds of one INSERT ... SELECT ... ON CONFLICT from a loaded staging table."""
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TABLE bench_stage ({PG_DDL})")
        conn.execute(f"CREATE TABLE bench_target ({PG_DDL})")
        with conn.cursor() as cur, cur.copy("COPY bench_stage FROM STDIN") as copy:
            for r in net.values():
                copy.write_row(tuple(r[c] for c in COLUMNS))
        conn.commit()
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in COLUMNS[1:]
        )
        started = time.perf_counter()
        conn.execute(
            sql.SQL(
                "INSERT INTO bench_target SELECT * FROM bench_stage"
                " ON CONFLICT (id) DO UPDATE SET {}"
            ).format(updates)
        )
        conn.commit()
        return time.perf_counter() - started


def pg_naive(url: str, events: list[Event]) -> float:
    """Seconds for one statement per event, committing every 1000."""
    upsert = (
        "INSERT INTO bench_naive VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
        "owner = EXCLUDED.owner, balance = EXCLUDED.balance, updated = EXCLUDED.updated, "
        "notes = EXCLUDED.notes"
    )
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TABLE bench_naive ({PG_DDL})")
        conn.commit()
        started = time.perf_counter()
        for n, (op, key, after) in enumerate(events, start=1):
            if op == "d":
                conn.execute("DELETE FROM bench_naive WHERE id = %s", (key,))
            else:
                assert after is not None
                conn.execute(upsert, tuple(after[c] for c in COLUMNS))
            if n % 1000 == 0:
                conn.commit()
        conn.commit()
        return time.perf_counter() - started


# --- MariaDB baselines ------------------------------------------------------------------------


def my_connect(db: str | None = None) -> Any:
    host, port, user = MARIADB
    return pymysql.connect(
        host=host,
        port=port,
        user=user,
        database=db,
        local_infile=True,
        init_command="SET time_zone = '+00:00'",
    )


def _tsv(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def my_baseline(db: str, net: dict[int, dict[str, Any]]) -> float:
    """Seconds of LOAD DATA LOCAL INFILE into staging plus INSERT ... SELECT ... ON DUPLICATE
    KEY UPDATE (the file is written before the clock starts)."""
    with tempfile.NamedTemporaryFile("w", suffix=".tsv") as f:
        for r in net.values():
            f.write("\t".join(_tsv(r[c]) for c in COLUMNS) + "\n")
        f.flush()
        conn = my_connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE TABLE bench_stage ({MY_DDL})")
                cur.execute(f"CREATE TABLE bench_target ({MY_DDL})")
                started = time.perf_counter()
                with allowed(f.name):  # in case this process has the sink's guard
                    cur.execute("LOAD DATA LOCAL INFILE %s INTO TABLE bench_stage", (f.name,))
                cur.execute(
                    "INSERT INTO bench_target SELECT * FROM bench_stage ON DUPLICATE KEY UPDATE "
                    "owner = VALUES(owner), balance = VALUES(balance), "
                    "updated = VALUES(updated), notes = VALUES(notes)"
                )
            conn.commit()
            return time.perf_counter() - started
        finally:
            conn.close()


def my_naive(db: str, events: list[Event]) -> float:
    upsert = (
        "INSERT INTO bench_naive VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
        "owner = VALUES(owner), balance = VALUES(balance), updated = VALUES(updated), "
        "notes = VALUES(notes)"
    )
    conn = my_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE bench_naive ({MY_DDL})")
            started = time.perf_counter()
            for n, (op, key, after) in enumerate(events, start=1):
                if op == "d":
                    cur.execute("DELETE FROM bench_naive WHERE id = %s", (key,))
                else:
                    assert after is not None
                    values = [after[c] for c in COLUMNS]
                    values[3] = values[3].astimezone(UTC).replace(tzinfo=None)
                    cur.execute(upsert, values)
                if n % 1000 == 0:
                    conn.commit()
            conn.commit()
            return time.perf_counter() - started
    finally:
        conn.close()


# --- the run ----------------------------------------------------------------------------------


def _task(
    name: str, prefix: str, engine: str, url: str, batch: int | None, workers: int = 1
) -> TaskConfig:
    target: dict[str, Any] = {"engine": engine, "url": url, "workers": workers}
    if batch is not None:
        target["batch_size"] = batch
    return TaskConfig.model_validate(
        {
            "name": name,
            "kafka": {"topic_prefix": prefix, "partitions": workers},
            "target": target,
        }
    )


def _report(label: str, rows: int, seconds: float, reference: float | None = None) -> None:
    ratio = f"  ({reference / seconds:.2f}x of the sink's time)" if reference else ""
    print(f"  {label:<52} {seconds:8.2f}s  {rows / seconds:>10,.0f} /s{ratio}")


def _print_target(
    name: str,
    baseline: str,
    sink: tuple[int, float, float],
    net_rows: int,
    base_s: float,
    sample_events: int,
    naive_s: float,
) -> None:
    """One target's rates and ratios; all measured in this run."""
    applied, elapsed, rss = sink
    print(name)
    print(f"  sink: {applied:,} events, {elapsed:.2f}s, peak RSS {rss:,.0f} MB")
    _report("sink (events/s)", applied, elapsed)
    _report("sink (net rows/s)", net_rows, elapsed)
    _report(f"baseline {baseline} (rows/s)", net_rows, base_s)
    _report(f"naive row-by-row ({sample_events:,} events/s)", sample_events, naive_s)
    print(f"  ratio sink / baseline (net rows/s): {base_s / elapsed:.2f}")
    print(f"  ratio sink / naive (events/s): {(applied / elapsed) / (sample_events / naive_s):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="target.batch_size (default: the task's)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="sink processes, and partitions of the topic"
    )
    parser.add_argument("--naive-sample", type=int, default=20_000)
    parser.add_argument("--skip", choices=["postgres", "mysql"], action="append", default=[])
    args = parser.parse_args()

    suffix = uuid.uuid4().hex[:8]
    prefix = f"bench{suffix}"
    events, net = make_events(args.events)
    print(
        f"{len(events):,} events ({len(net):,} net rows), topic prefix {prefix}, "
        f"{args.workers} partition(s) and sink process(es)"
    )
    producing = _task(f"b{suffix}p", prefix, "postgres", PG_ADMIN, 1, args.workers)
    try:
        run_targets(args, suffix, prefix, producing, events, net)
    finally:
        for _line in delete_topics(producing):  # 1M events are ~250 MB of Kafka log
            pass


def run_targets(
    args: argparse.Namespace,
    suffix: str,
    prefix: str,
    producing: TaskConfig,
    events: list[Event],
    net: dict[int, dict[str, Any]],
) -> None:
    """Produce `events`, then apply them into each target not skipped, with its baselines."""
    seconds = produce(producing, events)
    print(f"  produced into Kafka in {seconds:.1f}s ({len(events) / seconds:,.0f} events/s)")
    sample = events[: args.naive_sample]
    pg_db, my_db = f"hw_bench_{suffix}", f"hw_bench_{suffix}"

    if "postgres" not in args.skip:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg_db)))
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_db}"
        plain = url.replace("+psycopg", "")
        try:
            elapsed, applied, rss = run_sink(
                _task(f"b{suffix}pg", prefix, "postgres", url, args.batch_size, args.workers),
                len(events),
            )
            base = pg_baseline(plain, net)
            naive = pg_naive(plain, sample)
            _print_target(
                "PostgreSQL",
                "INSERT..SELECT..ON CONFLICT",
                (applied, elapsed, rss),
                len(net),
                base,
                len(sample),
                naive,
            )
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(pg_db))
                )

    if "mysql" not in args.skip:
        admin = my_connect()
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{my_db}`")  # generated name
        url = f"mysql+pymysql://root@127.0.0.1:3306/{my_db}"
        try:
            elapsed, applied, rss = run_sink(
                _task(f"b{suffix}my", prefix, "mysql", url, args.batch_size, args.workers),
                len(events),
            )
            base = my_baseline(my_db, net)
            naive = my_naive(my_db, sample)
            _print_target(
                "MariaDB",
                "LOAD DATA + INSERT..SELECT..ODKU",
                (applied, elapsed, rss),
                len(net),
                base,
                len(sample),
                naive,
            )
        finally:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{my_db}`")
            admin.close()


if __name__ == "__main__":
    main()
