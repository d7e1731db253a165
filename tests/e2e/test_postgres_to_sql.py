"""End to end across engines, against the real stack: the sample PostgreSQL database moved
by the real producer and sink processes (TaskRunner) into MariaDB and into SQLite while
changes are written, then every row compared after the documented type conversion
(headwater/compare_sql.py); and the sink killed with SIGKILL at a few random points (fixed
seed) and restarted: the target ends equal to the source, nothing lost, nothing doubled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.sample_db import Workload, create_sample
from producers.postgres.connection import connect
from tests.helpers import assert_all_match, stream_while_killing_the_sink
from tests.sink_support import mariadb_database

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EMPTY = {"public.empty_at_source"}
CUSTOMERS = 200


@pytest.fixture(params=["mysql", "sqlite"])
def task(
    request: pytest.FixtureRequest, make_task: Callable[..., TaskConfig], tmp_path: Path
) -> Iterator[TaskConfig]:
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'target.db'}"])
    else:
        urls = mariadb_database(request.getfixturevalue("mariadb_root"))
    for url in urls:
        built = make_task(
            target={"engine": request.param, "url": url, "batch_size": 1000, "batch_wait_s": 0.2}
        )
        with connect(built.source.url) as conn:
            create_sample(conn, CUSTOMERS)
            # Empty at the source: no event ever names it, the target must still have it.
            conn.execute("CREATE TABLE empty_at_source (id int PRIMARY KEY, label text)")
        yield built


def test_full_load_and_cdc_into_another_engine(task: TaskConfig, runner: TaskRunner) -> None:
    with connect(task.source.url) as conn:
        workload = Workload(conn, seed=5)
        workload.run(100)  # while the full load runs
        runner.wait_caught_up(240)
        workload.run(150)
    runner.wait_caught_up(240)
    assert_all_match(compare_task(task), empty=EMPTY)


def test_sink_killed_at_random_points_ends_equal(task: TaskConfig, runner: TaskRunner) -> None:
    stream_while_killing_the_sink(task, runner, write_seed=31, kill_seed=1234)
    assert_all_match(compare_task(task), empty=EMPTY)


def test_types_widened_at_the_source_widen_the_target(task: TaskConfig, runner: TaskRunner) -> None:
    runner.wait_caught_up(240)
    with connect(task.source.url) as conn:
        conn.execute("ALTER TABLE order_lines ALTER COLUMN qty TYPE bigint")
        conn.execute(
            "UPDATE order_lines SET qty = 5000000000"
            " WHERE (order_id, line_no) = (SELECT min(order_id), 1 FROM order_lines)"
        )
        conn.execute("ALTER TABLE orders ALTER COLUMN status TYPE varchar(60)")
        conn.execute(
            "UPDATE orders SET status = repeat('s', 60) WHERE id = (SELECT min(id) FROM orders)"
        )
    runner.wait_caught_up(240)
    assert_all_match(compare_task(task), empty=EMPTY)
