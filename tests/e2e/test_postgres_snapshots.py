"""Snapshots beyond the first full load, end to end: a full load killed half way resumes
where it stopped, an incremental snapshot requested while changes stream repairs a damaged
target without a stale overwrite, and a newly included table is loaded on the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from producers.postgres.connection import connect
from producers.task_state import TaskStateStore

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def fill(task: TaskConfig, table: str, rows: int) -> None:
    with connect(task.source.url) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id int PRIMARY KEY, val int NOT NULL, note text NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO {table} SELECT g, g, md5(g::text) FROM generate_series(1, %s) g",
            (rows,),
        )


def assert_equal(task: TaskConfig) -> None:
    for c in compare_task(task):
        assert c.matches, (c.table, c.missing[:5], c.extra[:5], c.different[:5])


def keep_writing(task: TaskConfig, table: str, stop: threading.Event, top: int) -> None:
    with connect(task.source.url) as conn:
        i = 0
        while not stop.is_set():
            i += 1
            key = (i * 7919) % top + 1
            conn.execute(f"UPDATE {table} SET val = val + 1 WHERE id = %s", (key,))
            if i % 10 == 0:
                conn.execute(f"DELETE FROM {table} WHERE id = %s", ((i * 31) % top + 1,))
            time.sleep(0.002)


def test_full_load_killed_half_way_resumes(make_task: Callable[..., TaskConfig]) -> None:
    # 120 chunks of 1,000 rows, so the load is killed with some of them finished (the native
    # encoder reads a chunk in milliseconds: the per-chunk flush and state write pace it).
    rows, chunk = 120_000, 1000
    task = make_task(source={"snapshot_fetch_rows": 500, "snapshot_chunk_rows": chunk})
    fill(task, "big", rows)
    store = TaskStateStore(task.kafka.bootstrap_servers)
    first = TaskRunner(task)
    first.start()
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline:
        state = store.load(task.name)
        if state and state.snapshot_status == "running" and state.tables["public.big"].rows:
            break
        time.sleep(0.1)
    assert state is not None and state.snapshot_status == "running"
    loaded_before_kill = state.tables["public.big"].rows
    assert 0 < loaded_before_kill < rows
    for proc in first.procs.values():
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
    first.stop(timeout=10)
    with connect(task.source.url) as conn:  # changes while the task is down
        conn.execute("UPDATE big SET val = -1 WHERE id IN (1, 59999)")
        conn.execute("DELETE FROM big WHERE id = 2")
    second = TaskRunner(task)
    second.start()
    try:
        second.wait_caught_up(240)
    finally:
        second.stop(timeout=20)
    assert_equal(task)
    final = store.load(task.name)
    assert final is not None and final.snapshot_status == "done"
    # It continued after the last acknowledged key instead of reading the table again (the
    # chunks the two workers had in flight are read again).
    assert final.tables["public.big"].rows < rows + 2 * chunk


def test_incremental_snapshot_repairs_target_under_concurrent_writes(
    make_task: Callable[..., TaskConfig], tmp_path: Path
) -> None:
    task = make_task()
    fill(task, "items", 5_000)
    runner = TaskRunner(task)
    runner.start()
    stop_writing = threading.Event()
    writer = threading.Thread(target=keep_writing, args=(task, "items", stop_writing, 5_000))
    try:
        runner.wait_caught_up(180)
        with connect(task.target.url, role="target") as conn:  # damage the copy
            conn.execute("DELETE FROM items WHERE id % 10 = 0")
            conn.execute("UPDATE items SET note = 'wrong' WHERE id % 10 = 5")
        writer.start()
        task_file = tmp_path / "task.yaml"
        task_file.write_text(yaml.safe_dump(task.model_dump(by_alias=True, exclude_none=True)))
        asked_ms = int(time.time() * 1000)
        asked = subprocess.run(
            [
                sys.executable,
                "-m",
                "headwater.cli",
                "snapshot",
                str(task_file),
                "--table",
                "public.items",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert asked.returncode == 0, asked.stderr
        # Done, and for this request: the full load's record says done too.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
            items = state.tables["public.items"] if state else None
            if state and items and items.started_ms >= asked_ms and items.done:
                assert state.snapshot_status == "done"
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the incremental snapshot did not finish in 120 s")
        stop_writing.set()
        writer.join(30)
        runner.wait_caught_up(120)
    finally:
        stop_writing.set()
        runner.stop(timeout=20)
    assert_equal(task)


def test_newly_included_table_is_loaded_on_the_next_run(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task(tables={"include": ["public.first"]})
    fill(task, "first", 300)
    fill(task, "second", 700)
    runner = TaskRunner(task)
    runner.start()
    try:
        runner.wait_caught_up(180)
    finally:
        runner.stop(timeout=20)
    wider = TaskConfig.model_validate(
        {**task.model_dump(by_alias=True), "tables": {"include": ["public.*"]}}
    )
    with connect(task.source.url) as conn:
        conn.execute("UPDATE second SET val = 0 WHERE id < 10")
    again = TaskRunner(wider)
    again.start()
    try:
        again.wait_caught_up(180)
        with connect(task.source.url) as conn:
            conn.execute("INSERT INTO second VALUES (10000, 1, 'streamed')")
        again.wait_caught_up(60)
    finally:
        again.stop(timeout=20)
    assert_equal(wider)
