"""End to end, PostgreSQL to PostgreSQL: tables renamed while streaming (`ALTER TABLE ...
RENAME TO`). A renamed table is followed by OID: its rows end under the new name in the
target and the old name is emptied, a column added after the rename reaches the target, a
table renamed out of the selection stops being followed, one renamed into it (from a name
the publication did not list) is added to the publication and loaded, and a rename made
while the task was stopped ends the same after a restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
from psycopg import sql

from headwater.compare import TableComparison, compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.status import collect_status
from producers.postgres.connection import connect
from producers.task_state import TaskStateStore
from schemas.tables import TableId
from schemas.topics import table_topic, value_subject
from tests.helpers import started_runners

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SETUP = [
    "CREATE TABLE orders (id int PRIMARY KEY, v text NOT NULL)",
    "INSERT INTO orders SELECT g, 'v' || g FROM generate_series(1, 500) g",
    "CREATE TABLE notes (id int PRIMARY KEY, v text)",
    "INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 20) g",
    "CREATE TABLE parked_old (id int PRIMARY KEY, v text)",  # excluded by the task
    "INSERT INTO parked_old SELECT g, 'p' || g FROM generate_series(1, 30) g",
]


@pytest.fixture
def runner() -> Iterator[Callable[[TaskConfig], TaskRunner]]:
    yield from started_runners()


@pytest.fixture
def task(make_task: Callable[..., TaskConfig]) -> TaskConfig:
    built = make_task(tables={"include": ["public.*"], "exclude": ["public.*_old"]})
    run(built, *SETUP)
    return built


def run(task: TaskConfig, *statements: str) -> None:
    with connect(task.source.url) as conn:
        for statement in statements:
            conn.execute(statement)


def target_tables(task: TaskConfig) -> dict[str, int]:
    """Every table of the target's public schema and its row count."""
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT LIKE 'headwater%'"
            )
        ]
        query = sql.SQL("SELECT count(*) FROM {}")
        return {
            n: int(conn.execute(query.format(sql.Identifier("public", n))).fetchone()[0])  # type: ignore[index]
            for n in names
        }


def wait_equal(task: TaskConfig, r: TaskRunner, timeout: float = 120) -> list[TableComparison]:
    """Caught up, then every selected table equal row by row (a reload after a rename may
    still be running when the first catch-up is reported)."""
    deadline = time.monotonic() + timeout
    while True:
        r.wait_caught_up(timeout)
        try:
            found = compare_task(task)
        except psycopg.errors.UndefinedTable:  # not created in the target yet
            found = []
        if (found and all(c.matches for c in found)) or time.monotonic() > deadline:
            for c in found:
                assert c.matches, (c.table, c.missing[:5], c.extra[:5], c.different[:5])
            return found
        time.sleep(1)


def test_rename_within_out_of_and_into_the_selection(
    task: TaskConfig, runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    r = runner(task)
    r.wait_caught_up(180)
    run(
        task,
        "UPDATE orders SET v = 'before' WHERE id <= 10",
        "ALTER TABLE orders RENAME TO orders2",
        "INSERT INTO orders2 VALUES (1001, 'after')",
        "UPDATE orders2 SET v = 'after' WHERE id BETWEEN 5 AND 15",
        "DELETE FROM orders2 WHERE id = 20",
        "ALTER TABLE orders2 ADD COLUMN note text",
        "INSERT INTO orders2 VALUES (1002, 'with note', 'hello')",
        "UPDATE orders2 SET note = 'set' WHERE id = 30",
        # Out of the selection, and nothing written after it (so no Relation message
        # tells the stream): no longer followed, the old name emptied.
        "ALTER TABLE notes RENAME TO notes_old",
        # Into it, from a name the publication does not list.
        "ALTER TABLE parked_old RENAME TO parked",
        "INSERT INTO parked VALUES (100, 'p100')",
    )
    found = wait_equal(task, r)
    assert {str(c.table): c.source_rows for c in found} == {
        "public.orders2": 501,
        "public.parked": 31,
    }
    assert target_tables(task) == {"orders": 0, "orders2": 501, "notes": 0, "parked": 31}
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT note FROM orders2 WHERE id = 1002").fetchone()
    assert row == ("hello",)
    # The new shape is a version of the new name's subject.
    subject = value_subject(table_topic(task.topic_prefix, TableId("public", "orders2")))
    versions = httpx.get(f"{task.registry.url}/subjects/{subject}/versions").json()
    assert len(versions) >= 2
    # Writes keep flowing under the new names; notes_old is not followed.
    run(
        task,
        "INSERT INTO orders2 VALUES (1003, 'later', 'x')",
        "DELETE FROM parked WHERE id = 1",
        "INSERT INTO notes_old VALUES (100, 'unseen')",
    )
    wait_equal(task, r)
    assert target_tables(task) == {"orders": 0, "orders2": 502, "notes": 0, "parked": 30}


def test_rename_while_the_task_is_stopped(
    task: TaskConfig, runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    first = runner(task)
    first.wait_caught_up(180)
    run(task, "INSERT INTO orders VALUES (1001, 'streamed')")
    first.wait_caught_up(120)
    first.stop(timeout=20)
    run(
        task,
        "ALTER TABLE orders RENAME TO orders2",
        "INSERT INTO orders2 VALUES (1002, 'while stopped')",
        "ALTER TABLE notes RENAME TO notes_old",  # out, and no write after it
    )
    second = runner(task)
    wait_equal(task, second)
    assert target_tables(task) == {"orders": 0, "orders2": 502, "notes": 0}
    state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    assert state is not None and set(state.tables) == {"public.orders2"}
    progress = state.tables["public.orders2"]
    # Loaded once under the new name: its rows, not a second pass.
    assert progress.done and progress.rows == 502 and progress.oid
    second.stop(timeout=20)
    # A restart with nothing renamed loads nothing again.
    third = runner(task)
    wait_equal(task, third)
    again = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    assert again is not None and again.tables["public.orders2"].rows == 502


def test_dropped_table_keeps_its_rows_and_a_new_one_under_its_name_loads(
    make_task: Callable[..., TaskConfig], capfd: pytest.CaptureFixture[str]
) -> None:
    task = make_task(tables={"include": ["public.*"], "exclude": ["public.*_old"]})
    run(task, *SETUP[:4])
    r = TaskRunner(task)
    r.start()
    try:
        r.wait_caught_up(180)
        run(task, "DROP TABLE notes", "INSERT INTO orders VALUES (1001, 'after the drop')")
        deadline = time.monotonic() + 30  # the catalog poll, every 5 s
        log = ""
        while "was dropped at the source" not in log and time.monotonic() < deadline:
            time.sleep(0.5)
            log += capfd.readouterr().err
        assert "public.notes (oid" in log and "was dropped at the source" in log
        found = wait_equal(task, r)
        assert {str(c.table): c.source_rows for c in found} == {"public.orders": 501}
        assert target_tables(task) == {"orders": 501, "notes": 20}  # the rows stay
        # A table created under the name later is a new table: emptied, then loaded.
        run(
            task,
            "CREATE TABLE notes (id int PRIMARY KEY, v text)",
            "INSERT INTO notes VALUES (1, 'new one'), (2, 'new two')",
        )
        wait_equal(task, r)
        assert target_tables(task) == {"orders": 501, "notes": 2}
        r.check()
        log += capfd.readouterr().err
        assert log.count("was dropped at the source") == 1  # said once, not every poll
    finally:
        r.stop(timeout=20)


@pytest.mark.slow  # ~40 s, most of it waiting out a 30 s acknowledgement interval
def test_swap_then_the_stream_replays_from_before_it(
    make_task: Callable[..., TaskConfig], runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    """Two tables swap names through a temporary one; then the replication connection drops
    before the slot was told (acknowledgements every 30 s), so the stream sends again the
    changes from before the swap, under the old names."""
    task = make_task(
        tables={"include": ["public.*"], "exclude": ["public.*_old"]},
        source={"ack_interval_s": 30},
    )
    run(task, *SETUP[:4])
    r = runner(task)
    # Not wait_caught_up: that waits for an acknowledgement, every 30 s here.
    deadline = time.monotonic() + 180
    while True:
        r.check()
        if collect_status(task).load_finished:
            break
        assert time.monotonic() < deadline, "the full load did not finish"
        time.sleep(0.5)
    run(
        task,
        "UPDATE orders SET v = 'before swap' WHERE id <= 5",
        "UPDATE notes SET v = 'before swap' WHERE id <= 5",
        "ALTER TABLE orders RENAME TO swap_old",
        "ALTER TABLE notes RENAME TO orders",
        "ALTER TABLE swap_old RENAME TO notes",
        "INSERT INTO orders VALUES (2000, 'was notes')",
        "INSERT INTO notes VALUES (3000, 'was orders')",
    )
    time.sleep(3)  # the producer has handled the swap; the slot has not been told yet
    run(
        task,
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        f"WHERE slot_name = '{task.slot_name}' AND active_pid IS NOT NULL",
        "UPDATE orders SET v = 'after reconnect' WHERE id = 1",
    )
    wait_equal(task, r, timeout=180)
    assert target_tables(task) == {"orders": 21, "notes": 501}
    r.check()  # the producer reconnected instead of failing


def test_partitioned_table_streams_under_its_own_name(
    make_task: Callable[..., TaskConfig], runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    """The task's publication publishes via the partition root: changes come under the
    partitioned table's OID and name, and the partitions' own Relation messages (sent
    beside the root's) are not taken for tables come into the selection."""
    task = make_task()
    run(
        task,
        "CREATE TABLE parts (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)",
        "CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (1000)",
        "CREATE TABLE parts_2 PARTITION OF parts FOR VALUES FROM (1000) TO (2000)",
        "INSERT INTO parts SELECT g, 'p' || g FROM generate_series(1, 1500, 7) g",
    )
    r = runner(task)
    r.wait_caught_up(180)
    run(
        task,
        "INSERT INTO parts VALUES (5, 'new'), (1005, 'new')",
        "UPDATE parts SET v = 'moved' WHERE id = 8",
        "DELETE FROM parts WHERE id = 1002",
    )
    wait_equal(task, r)
    assert set(target_tables(task)) == {"parts"}


def test_rename_during_the_initial_full_load(
    make_task: Callable[..., TaskConfig], runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    """A table renamed after the slot's snapshot and before the full load read it (a
    table of 1,000 small chunks is loaded first, by one worker): its rows are loaded from
    the snapshot all the same, then followed to the new name like a rename in the stream.
    The rename does not wait for the load (it waited for ever before: the load's planning
    transaction held a lock on every table until the load ended, and the load's read of
    the table queued behind the rename)."""
    task = make_task(
        tables={"include": ["public.*"], "exclude": ["public.*_old"]},
        source={"snapshot_workers": 1, "snapshot_chunk_rows": 100},
    )
    run(
        task,
        *SETUP[:4],
        # Most chunks: loaded first (chunks.order_for_load).
        "CREATE TABLE blocker (id int PRIMARY KEY, v text)",
        "INSERT INTO blocker SELECT g, 'b' || g FROM generate_series(1, 100000) g",
    )
    r = runner(task)
    store = TaskStateStore(task.kafka.bootstrap_servers)
    deadline = time.monotonic() + 120
    while not _loading(store, task, "public.blocker"):
        r.check()
        assert time.monotonic() < deadline, "the full load did not start"
        time.sleep(0.1)
    run(
        task,
        "ALTER TABLE orders RENAME TO orders2",
        "INSERT INTO orders2 VALUES (1001, 'after the rename')",
        "UPDATE orders2 SET v = 'changed' WHERE id <= 10",
    )
    state = store.load(task.name)
    assert state is not None and state.snapshot_status == "running"
    orders = state.tables.get("public.orders")
    assert orders is not None and orders.rows == 0, "orders was read before the rename"
    found = wait_equal(task, r, timeout=180)
    assert {str(c.table): c.source_rows for c in found} == {
        "public.orders2": 501,
        "public.notes": 20,
        "public.blocker": 100000,
    }
    assert target_tables(task) == {"orders": 0, "orders2": 501, "notes": 20, "blocker": 100000}
    r.check()


def _loading(store: TaskStateStore, task: TaskConfig, table: str) -> bool:
    """Whether the task's full load has finished a chunk of `table` (and so is reading at
    its snapshot)."""
    state = store.load(task.name, timeout=2)
    progress = state.tables.get(table) if state is not None else None
    return progress is not None and progress.rows > 0
