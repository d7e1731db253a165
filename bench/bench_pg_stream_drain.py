"""Benchmark: how fast the PostgreSQL streaming producer alone drains a backlog, on the local
stack. pgbench writes one-statement transactions (the scripts of bench_pg_streaming: 50%
inserts, 40% updates, 10% deletes) while the task's slot exists but no producer reads it;
then the producer starts and the time until the slot confirmed the last position is
measured, with the producer's CPU. Prints numbers; asserts nothing.

    .venv/bin/python bench/bench_pg_stream_drain.py --seconds 10
    HEADWATER_FRAME_LOOP=0 .venv/bin/python bench/bench_pg_stream_drain.py  # frames read in Python
    HEADWATER_NATIVE=0 .venv/bin/python bench/bench_pg_stream_drain.py   # the Python path
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from bench_pg_source import create_db, db_url, drop_db
from bench_pg_streaming import (
    changed_rows,
    pgbench_command,
    prepare_source,
    prepare_target,
    task_config,
    write_scripts,
)

from headwater.cleanup import cleanup_task
from headwater.gc_tuning import tune_gc
from producers.postgres import native_loop
from producers.postgres.producer import run_postgres_producer
from schemas.native_lib import LIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="pgbench run writing the backlog")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=100_000, help="seeded rows")
    args = parser.parse_args()

    suffix = uuid.uuid4().hex[:6]
    source, target = f"drain_src_{suffix}", f"drain_dst_{suffix}"
    for name in (source, target):
        create_db(name)
    task = task_config(f"drain{suffix}", source, target, "cdc", {})
    tune_gc()  # as in a stage process (headwater/stages.py)
    try:
        prepare_source(source, args.rows)
        prepare_target(target)
        # A first run creates the slot (cdc: no full load) and stops.
        stop = threading.Event()
        first = threading.Thread(target=run_postgres_producer, args=(task, stop))
        first.start()
        time.sleep(4)
        stop.set()
        first.join()

        before = changed_rows(db_url(source))
        with tempfile.TemporaryDirectory() as folder:
            command = pgbench_command(db_url(source), write_scripts(Path(folder)), args, None)
            subprocess.run(command, capture_output=True, text=True, check=True)
        changes = changed_rows(db_url(source)) - before
        with psycopg.connect(db_url(source), autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
            end = row[0] if row else None

            stop = threading.Event()
            started, cpu = time.perf_counter(), time.process_time()
            drain = threading.Thread(target=run_postgres_producer, args=(task, stop))
            drain.start()
            done = False
            while not done and drain.is_alive():
                time.sleep(0.05)
                found = conn.execute(
                    "SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    (end, task.slot_name),
                ).fetchone()
                done = bool(found and found[0])
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            stop.set()
            drain.join()
        if native_loop.available():
            path = "native frame loop"
        else:
            path = "native change encoder" if LIB is not None else "Python path"
        print(f"backlog: {changes:,} changed rows from {args.seconds} s of pgbench")
        print(f"{path}: drained in {elapsed:.2f} s = {changes / elapsed:,.0f} changes/s")
        print(
            f"producer CPU {cpu:.2f} s = {changes / cpu:,.0f} changes per CPU-second "
            "(start-up, registry and topic checks included)"
        )
    finally:
        for _line in cleanup_task(task, topics=True):
            pass
        for name in (source, target):
            drop_db(name)


if __name__ == "__main__":
    main()
