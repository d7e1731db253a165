"""End to end with `target.workers: 2` and three partitions per topic: the real producer and
two sink processes in one consumer group; inserts, updates and deletes with TRUNCATEs between
them at the source while a sink worker is killed with SIGKILL and restarted (its partitions
move mid-stream, possibly held at a truncate). The target ends equal to the source row by
row, and `headwater status` lists both sink workers with their partitions."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.status import collect_status
from producers.postgres.connection import connect
from tests.sink_support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture
def task(make_task: Callable[..., TaskConfig]) -> TaskConfig:
    built = make_task(
        target={"workers": 2, "batch_size": 200, "batch_wait_s": 0.1},
        kafka={"partitions": 3},
    )
    with connect(built.source.url) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, amount int, note text)")
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, amount int)")
        conn.execute("INSERT INTO ledger SELECT g, g, 'loaded' FROM generate_series(1, 300) g")
    return built


def _round(conn: psycopg.Connection[Any], first: int, truncate: bool) -> None:
    """Rows before a TRUNCATE on every partition, then rows after it on every partition."""
    execute = conn.execute
    execute(
        "INSERT INTO ledger SELECT g, g, 'before' FROM generate_series(%s::int, %s::int) g",
        (first, first + 199),
    )
    execute("UPDATE ledger SET amount = amount + 1 WHERE mod(id, 7) = 0")
    execute(
        "INSERT INTO kept SELECT g, g FROM generate_series(%s::int, %s::int) g", (first, first + 49)
    )
    if truncate:
        execute("TRUNCATE ledger")
    execute(
        "INSERT INTO ledger SELECT g, -g, 'after' FROM generate_series(%s::int, %s::int) g",
        (first + 200, first + 349),
    )
    execute("DELETE FROM ledger WHERE mod(id, 5) = 0")


def test_two_sink_workers_with_truncates_end_equal(task: TaskConfig, runner: TaskRunner) -> None:
    assert set(runner.procs) == {"producer", "sink", "sink-2"}
    runner.wait_caught_up(240)
    with connect(task.source.url) as conn:
        for number in range(5):
            _round(conn, 1000 * (number + 1), truncate=number % 2 == 0)
            if number == 2:
                victim = runner.procs["sink-2"]
                assert victim.pid is not None
                os.kill(victim.pid, signal.SIGKILL)
                victim.join(10)
                runner.start_stage("sink-2")
            time.sleep(0.3)
    runner.wait_caught_up(240)
    for c in compare_task(task):
        assert c.matches, (c.table, c.missing[:5], c.extra[:5], c.different[:5])
        assert c.source_rows == c.target_rows

    def settled() -> bool:
        # Two members, and every partition handed out: a cooperative rebalance after the
        # restart gives back the revoked partitions in a second round.
        sinks = collect_status(task).sinks
        return len(sinks) == 2 and sum(len(m.partitions) for m in sinks) == 6

    wait_for(settled, timeout=60)
    status = collect_status(task)
    clients = {m.client_id for m in status.sinks}
    assert clients == {f"headwater-{task.name}-sink", f"headwater-{task.name}-sink-2"}
    assigned = sorted(p for m in status.sinks for p in m.partitions)
    assert len(assigned) == 6 and len(set(assigned)) == 6  # two tables, three partitions each
    assert status.to_json()["sinks"] and status.to_json()["stopped_tables"] == []
