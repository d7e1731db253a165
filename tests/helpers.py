"""What the end-to-end tests share: task runners stopped after the test, the sample
database written to from a background thread, and the row-by-row check of its tables."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator

from headwater.compare import TableComparison
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.sample_db import Workload
from producers.postgres.connection import connect

SAMPLE_TABLES = {"public.customers", "public.orders", "public.order_lines"}


def assert_all_match(comparisons: list[TableComparison], empty: Collection[str] = ()) -> None:
    """Every table of the sample database compared, equal and not empty; the `empty` tables
    too (schema.table), present in the target and empty on both sides."""
    assert {str(c.table) for c in comparisons} == SAMPLE_TABLES | set(empty)
    for c in comparisons:
        assert c.matches, (c.table, c.missing[:5], c.extra[:5], c.different[:5])
        if str(c.table) in empty:
            assert c.source_rows == c.target_rows == 0
        else:
            assert c.source_rows == c.target_rows > 0


def started_runners() -> Iterator[Callable[[TaskConfig], TaskRunner]]:
    """For a fixture: start a TaskRunner per call; all are stopped at teardown."""
    started: list[TaskRunner] = []

    def start(task: TaskConfig) -> TaskRunner:
        r = TaskRunner(task)
        r.start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop(timeout=20)


def write_in_background(
    task: TaskConfig, changes: int, seed: int
) -> tuple[threading.Thread, list[int]]:
    """Run `changes` workload steps on the source from a thread; once done, the list holds
    the workload's total count."""
    done: list[int] = []

    def work() -> None:
        with connect(task.source.url) as conn:
            w = Workload(conn, seed=seed)
            for _ in range(changes):
                w.step()
                time.sleep(0.005)
            done.append(w.counts.total)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, done


def stream_while_killing_the_sink(
    task: TaskConfig, runner: TaskRunner, write_seed: int, kill_seed: int
) -> None:
    """Mixed changes written while the sink is SIGKILLed three times at random points
    (`kill_seed`) and started again, until the task caught up with all of them."""
    runner.wait_caught_up(240)
    writer, done = write_in_background(task, 600, seed=write_seed)
    kill_sink_at_random_points(runner, seed=kill_seed)
    writer.join(180)
    assert done
    runner.wait_caught_up(240)


def kill_sink_at_random_points(runner: TaskRunner, seed: int, times: int = 3) -> None:
    """SIGKILL the runner's sink process `times` times, each after a random 0.3-2 s (fixed
    `seed`), starting a new one after each kill."""
    rng = random.Random(seed)
    for _ in range(times):
        time.sleep(rng.uniform(0.3, 2.0))
        sink = runner.procs["sink"]
        assert sink.pid is not None and sink.is_alive()
        os.kill(sink.pid, signal.SIGKILL)
        sink.join(10)
        runner.start_stage("sink")
