"""Benchmark: a PostgreSQL full load and a burst of streamed changes through headwater,
against the issue's raw COPY (`psql \\copy ... TO STDOUT | psql \\copy ... FROM STDIN` into
the same table) and the stricter `pg_dump | psql` (which builds the primary key after the
rows), on the local stack. Prints numbers and ratios measured in the same run; asserts
nothing.

    .venv/bin/python bench/bench_pg_source.py --rows 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from headwater.cleanup import cleanup_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.stack import manager
from headwater.status import TaskStatus

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# How often the run is checked for being done: the end of a run is known to within this.
POLL_S = 0.1

# About 200 bytes a row, the size the issue asks for.
TABLE_SQL = """
CREATE TABLE bench_rows (
    id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2) NOT NULL,
    status varchar(16) NOT NULL, created_at timestamptz NOT NULL, note text NOT NULL,
    ref uuid NOT NULL
)"""
FILL_SQL = """
INSERT INTO bench_rows
SELECT g, g %% 10000, (g %% 100000) / 100.0, 'status-' || (g %% 7), now() - g * interval '1 s',
       repeat(md5(g::text), 3), md5(g::text)::uuid
FROM generate_series(1, %(rows)s) g"""


def db_url(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def stage_cpu(runner: TaskRunner) -> dict[str, float]:
    """CPU seconds of each stage process so far, with the children it waited for (the
    producer's snapshot workers)."""
    found = {}
    for name, proc in runner.procs.items():
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        found[name] = ticks / os.sysconf("SC_CLK_TCK")
    return found


def create_db(name: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_db(name: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s AND NOT active",
            (name,),
        )
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def baseline_dump_restore(source: str, target: str) -> float:
    """Seconds for `pg_dump -t bench_rows source | psql target`."""
    bindir = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    start = time.monotonic()
    dump = subprocess.Popen([bindir, "-t", "bench_rows", db_url(source)], stdout=subprocess.PIPE)
    subprocess.run(
        ["psql", "-q", db_url(target)], stdin=dump.stdout, check=True, stdout=subprocess.DEVNULL
    )
    dump.wait()
    return time.monotonic() - start


def median_of(runs: int, measure: Callable[[int], float]) -> float:
    """The median of `runs` measurements (run n gets n): one baseline run on this shared
    machine varies by a fifth."""
    return statistics.median(measure(n) for n in range(runs))


def baseline_copy_pipe(source: str, target: str) -> float:
    """Seconds for the issue's raw COPY: `psql -c "\\copy (SELECT ...) TO STDOUT" | psql -c
    "\\copy bench_rows FROM STDIN"` into the same table definition (its primary key there
    while it loads, as headwater's target has)."""
    with psycopg.connect(db_url(target), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_rows")
        conn.execute(TABLE_SQL)
    start = time.monotonic()
    out = subprocess.Popen(
        ["psql", "-q", db_url(source), "-c", "\\copy (SELECT * FROM bench_rows) TO STDOUT"],
        stdout=subprocess.PIPE,
    )
    subprocess.run(
        ["psql", "-q", db_url(target), "-c", "\\copy bench_rows FROM STDIN"],
        stdin=out.stdout,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    out.wait()
    return time.monotonic() - start


def headwater_run(source: str, target: str, mode: str, prefix: str, workers: int) -> TaskRunner:
    task = TaskConfig.model_validate(
        {
            "name": prefix,
            "mode": mode,
            "source": {"url": db_url(source), "snapshot_workers": workers},
            "target": {"url": db_url(target).replace("postgresql://", "postgresql+psycopg://")},
            "tables": {"include": ["public.bench_rows"]},
        }
    )
    runner = TaskRunner(task, log_level=logging.WARNING)
    runner.start()
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument(
        "--workers", type=int, default=2, help="source.snapshot_workers of the full load"
    )
    parser.add_argument(
        "--baseline-runs", type=int, default=3, help="each baseline's median is of this many"
    )
    args = parser.parse_args()
    manager.up(["kafka", "registry", "postgres"], echo=lambda _: None)
    run = uuid.uuid4().hex[:6]
    src, dst, base = f"bench_src_{run}", f"bench_dst_{run}", f"bench_base_{run}"
    pipe = f"bench_pipe_{run}"
    bases = [f"{base}_{n}" for n in range(args.baseline_runs)]
    for name in (src, dst, pipe, *bases):
        create_db(name)
    try:
        with psycopg.connect(db_url(src), autocommit=True) as conn:
            conn.execute(TABLE_SQL)
            conn.execute(FILL_SQL, {"rows": args.rows})
            conn.execute("ANALYZE bench_rows")
        dump_s = median_of(args.baseline_runs, lambda n: baseline_dump_restore(src, f"{base}_{n}"))
        copy_s = median_of(args.baseline_runs, lambda n: baseline_copy_pipe(src, pipe))

        runner = headwater_run(src, dst, "full-load-and-cdc", f"bench{run}", args.workers)
        start = time.monotonic()
        produced: list[float] = []  # when the producer had the whole load in Kafka

        def note_produced(status: TaskStatus) -> None:
            if not produced and status.state and status.state.snapshot_status == "done":
                produced.append(time.monotonic() - start)

        try:
            runner.wait_caught_up(3600, on_status=note_produced, poll_s=POLL_S)
            load_s = time.monotonic() - start
            produce_s = produced[0] if produced else load_s
            load_cpu = stage_cpu(runner)
            with psycopg.connect(db_url(src), autocommit=True) as conn:
                start = time.monotonic()
                conn.execute(
                    "UPDATE bench_rows SET amount = amount + 1 WHERE id <= %s", (args.updates,)
                )
            runner.wait_caught_up(3600, poll_s=POLL_S)
            stream_s = time.monotonic() - start
        finally:
            runner.stop()
            for _line in cleanup_task(runner.task, topics=True):
                pass
    finally:
        for name in (src, dst, pipe, *bases):
            drop_db(name)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"rows={args.rows:,} (about 200 bytes each), updates={args.updates:,}, "
        f"snapshot workers={args.workers}"
    )
    print(
        f"psql \\copy | \\copy     : {copy_s:8.1f} s  {args.rows / copy_s:10,.0f} rows/s"
        "  (the issue's raw COPY, into the table with its primary key; median)"
    )
    print(
        f"pg_dump | psql          : {dump_s:8.1f} s  {args.rows / dump_s:10,.0f} rows/s"
        "  (stricter: builds the primary key after the data; median)"
    )
    print(
        f"headwater full load     : {load_s:8.1f} s  {args.rows / load_s:10,.0f} rows/s"
        f"  ratio to raw COPY {copy_s / load_s:.2f}, to pg_dump|psql {dump_s / load_s:.2f}"
    )
    print(
        f"  of which into Kafka   : {produce_s:8.1f} s  {args.rows / produce_s:10,.0f} rows/s"
        f"  (producer and its {args.workers} snapshot worker(s), {POLL_S} s polling)"
    )
    cpu = sum(load_cpu.values())
    print(
        f"  stage CPU for the load: {cpu:8.1f} s  {args.rows / cpu:10,.0f} rows per CPU-second  ("
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in load_cpu.items())
        + "; PostgreSQL and Kafka not counted)"
    )
    print(
        f"headwater streamed burst: {stream_s:8.1f} s  {args.updates / stream_s:10,.0f} "
        "changes/s (one UPDATE statement, source commit to target applied)"
    )
    print(f"peak RSS of a stage process: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
