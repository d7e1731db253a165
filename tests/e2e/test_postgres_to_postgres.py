"""End to end, against the real stack: a full-load-and-cdc task while changes are written,
then every row of source and target compared; and restarts (clean stop, and SIGKILL of the
stages) in the middle of the stream: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psycopg
import pytest

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.sample_db import Workload, create_sample
from headwater.status import collect_status
from producers.postgres.connection import connect
from tests.helpers import (
    assert_all_match,
    started_runners,
    stream_while_killing_the_sink,
    write_in_background,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EMPTY = {"public.empty_at_source"}
CUSTOMERS = 300


@pytest.fixture
def task(make_task: Callable[..., TaskConfig]) -> Iterator[TaskConfig]:
    built = make_task()
    with connect(built.source.url) as conn:
        create_sample(conn, CUSTOMERS)
        # Empty at the source: no event ever names it, the target must still have it.
        conn.execute("CREATE TABLE empty_at_source (id int PRIMARY KEY, label text)")
    yield built


@pytest.fixture
def runner(task: TaskConfig) -> Iterator[Callable[[], TaskRunner]]:
    for start in started_runners():
        yield partial(start, task)


def target_rows(task: TaskConfig, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with connect(task.target.url, role="target") as conn:
        return conn.execute(query, params).fetchall()


def test_full_load_and_cdc_matches_row_by_row(
    task: TaskConfig, runner: Callable[[], TaskRunner]
) -> None:
    r = runner()
    with connect(task.source.url) as conn:
        workload = Workload(conn, seed=11)
        # Changes while the full load runs, then more once it has finished.
        counts = workload.run(150)
        r.wait_caught_up(240)
        moved = conn.execute(
            "SELECT order_id, line_no FROM order_lines WHERE line_no > 100 LIMIT 1"
        ).fetchone()
        gone = workload.insert_order()
        conn.execute("DELETE FROM orders WHERE id = %s", (gone,))
        workload.run(counts.total + 100)
    r.wait_caught_up(240)
    assert_all_match(compare_task(task), empty=EMPTY)
    r.stop()
    state = collect_status(task).state  # the producer's final record, written as it stopped
    assert state is not None and state.snapshot_status == "done"
    assert state.events_streamed >= 100  # the changes after the load came through the log
    # The key change moved the row: the new key is there, the old one is not.
    assert moved is not None
    order_id, line_no = moved
    assert target_rows(
        task,
        "SELECT 1 FROM public.order_lines WHERE order_id=%s AND line_no=%s",
        (order_id, line_no),
    )
    assert not target_rows(
        task,
        "SELECT 1 FROM public.order_lines WHERE order_id=%s AND line_no=%s",
        (order_id, line_no - 100),
    )
    # A row inserted after the snapshot and deleted again is absent.
    assert not target_rows(task, "SELECT 1 FROM public.orders WHERE id = %s", (gone,))


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_mid_stream_loses_and_doubles_nothing(
    task: TaskConfig, runner: Callable[[], TaskRunner], how: str
) -> None:
    first = runner()
    first.wait_caught_up(240)
    writer, _ = write_in_background(task, 400, seed=23)
    time.sleep(1.5)  # stop while changes are flowing
    if how == "sigkill":
        for proc in first.procs.values():
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
    first.stop(timeout=20)
    writer.join(120)
    with connect(task.source.url) as conn:
        Workload(conn, seed=99).run(60)  # more changes while the task is down
    second = runner()
    second.wait_caught_up(240)
    assert_all_match(compare_task(task), empty=EMPTY)
    # Offsets in the target follow the log exactly: one row per partition, no duplicates.
    rows = target_rows(
        task,
        "SELECT topic, partition, count(*) FROM headwater_offsets WHERE task = %s GROUP BY 1, 2",
        (task.name,),
    )
    assert rows and all(count == 1 for _t, _p, count in rows)


def test_sink_killed_at_random_points_ends_equal(
    task: TaskConfig, runner: Callable[[], TaskRunner]
) -> None:
    """The sink alone SIGKILLed three times at random points (fixed seed) of a stream of
    mixed changes and started again: the target ends equal to the source, row by row."""
    stream_while_killing_the_sink(task, runner(), write_seed=37, kill_seed=4321)
    assert_all_match(compare_task(task), empty=EMPTY)


def test_bad_source_fails_fast_with_a_clear_message(
    make_task: Callable[..., TaskConfig], pg_databases: tuple[str, str]
) -> None:
    source, _ = pg_databases
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE no_key (a int)")
    task = make_task()
    r = TaskRunner(task)
    r.start()
    try:
        with pytest.raises(Exception, match=r"without a primary key: public\.no_key"):
            r.wait_caught_up(60)
    finally:
        r.stop(timeout=10)
