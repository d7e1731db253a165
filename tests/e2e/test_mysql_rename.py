"""End to end, MariaDB into PostgreSQL: RENAME TABLE and ALTER TABLE ... RENAME while
streaming. The renamed table's rows end under its new name in the target (and the old name
is emptied), a table renamed out of the selection stops being followed, a new table under
an old name is followed, and a rename read from the binlog after the fact (the task was down,
INFORMATION_SCHEMA already shows the final names) ends the same. A table renamed during the
full load, after the read view began, does not stop a streaming task's load."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from producers.errors import SourceError
from producers.mysql import flavor
from producers.mysql.connection import Connection
from producers.mysql.position import BinlogPosition
from producers.mysql.producer import MysqlProducer
from producers.task_state import TaskStateStore
from tests.mysql_support import execute, mysql_db, mysql_task, runner

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
__all__ = ["mysql_db", "mysql_task", "runner"]


TABLE_T = (
    "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
    "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
)


def target_rows(task: TaskConfig, db: str) -> dict[str, list[tuple[object, ...]]]:
    """Every target table of the test's database: its rows by key."""
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (db,),
            )
        ]
        return {
            name: conn.execute(
                sql.SQL("SELECT id, v FROM {} ORDER BY id").format(sql.Identifier(db, name))
            ).fetchall()
            for name in names
        }


@pytest.mark.parametrize("resume_by", ["gtid", "position"])  # the reader reopens after a load
def test_renamed_tables_end_under_their_new_names(
    mysql_task: Callable[..., TaskConfig],
    mysql_db: str,
    runner: Callable[[TaskConfig], TaskRunner],
    resume_by: str,
) -> None:
    db = mysql_db.rsplit("/", 1)[1]
    execute(
        mysql_db,
        *TABLE_T,
        "CREATE TABLE u (id int PRIMARY KEY, v varchar(20))",
        "INSERT INTO u VALUES (1, 'u1'), (2, 'u2')",
    )
    task = mysql_task(
        source={"resume_by": resume_by},
        tables={"include": [f"{db}.*"], "exclude": [f"{db}.*_old"]},
    )
    first = runner(task)
    first.wait_caught_up(120)
    execute(
        mysql_db,
        "RENAME TABLE t TO t2",
        "INSERT INTO t2 VALUES (4, 'four')",
        "UPDATE t2 SET v = 'one!' WHERE id = 1",
        "ALTER TABLE u RENAME TO u_old",  # out of the selection: no longer followed
        "INSERT INTO u_old VALUES (3, 'u3')",
        "CREATE TABLE u (id int PRIMARY KEY, v varchar(20))",  # a new table, old name
        "INSERT INTO u VALUES (9, 'new u')",
    )
    first.wait_caught_up(120)
    assert target_rows(task, db) == {
        "t": [],
        "t2": [(1, "one!"), (2, "two"), (3, "three"), (4, "four")],
        "u": [(9, "new u")],
    }
    first.stop()
    # Renamed while the task is down: the events before the rename name a table that
    # INFORMATION_SCHEMA no longer has; the swap goes through a temporary name.
    execute(
        mysql_db,
        "INSERT INTO t2 VALUES (5, 'five')",
        "RENAME TABLE t2 TO tmp, u TO t2, tmp TO u",
        "UPDATE u SET v = 'five!' WHERE id = 5",
        "DELETE FROM t2 WHERE id = 9",
        "INSERT INTO t2 VALUES (10, 'ten')",
    )
    second = runner(task)
    second.wait_caught_up(120)
    assert target_rows(task, db) == {
        "t": [],
        "t2": [(10, "ten")],
        "u": [(1, "one!"), (2, "two"), (3, "three"), (4, "four"), (5, "five!")],
    }


def test_a_dropped_table_keeps_its_rows_and_one_created_under_its_name_starts_empty(
    mysql_task: Callable[..., TaskConfig],
    mysql_db: str,
    runner: Callable[[TaskConfig], TaskRunner],
    capfd: pytest.CaptureFixture[str],
) -> None:
    db = mysql_db.rsplit("/", 1)[1]
    execute(
        mysql_db,
        *TABLE_T,
        "CREATE TABLE keep (id int PRIMARY KEY, v varchar(20))",
        "INSERT INTO keep VALUES (1, 'k1')",
    )
    task = mysql_task(tables={"include": [f"{db}.*"]})
    r = runner(task)
    r.wait_caught_up(120)
    execute(mysql_db, "DROP TABLE t", "INSERT INTO keep VALUES (2, 'k2')")
    r.wait_caught_up(120)
    rows = target_rows(task, db)
    assert rows["t"] == [(1, "one"), (2, "two"), (3, "three")]  # kept
    assert rows["keep"] == [(1, "k1"), (2, "k2")]
    assert f"{db}.t was dropped at the source" in capfd.readouterr().err
    execute(
        mysql_db,
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
        "INSERT INTO t VALUES (9, 'new')",
    )
    r.wait_caught_up(120)
    assert target_rows(task, db) == {"t": [(9, "new")], "keep": [(1, "k1"), (2, "k2")]}


@pytest.mark.parametrize("mode", ["full-load-and-cdc", "full-load"])
def test_a_table_renamed_during_the_full_load(
    mysql_task: Callable[..., TaskConfig],
    mysql_db: str,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    db = mysql_db.rsplit("/", 1)[1]
    execute(
        mysql_db,
        "CREATE TABLE a (id int PRIMARY KEY)",
        "INSERT INTO a VALUES (1)",
        "CREATE TABLE b (id int PRIMARY KEY)",
        "INSERT INTO b VALUES (1)",
    )
    real = flavor.start_consistent_snapshot

    def then_rename(conn: Connection, found: flavor.Flavor) -> BinlogPosition:
        at = real(conn, found)
        execute(mysql_db, "RENAME TABLE b TO b2")  # after the read view began, before b is read
        return at

    monkeypatch.setattr(flavor, "start_consistent_snapshot", then_rename)
    task = mysql_task(mode=mode)
    producer = MysqlProducer(task, threading.Event())
    if mode == "full-load":
        # No stream to learn where b went: the task says to run it again.
        with pytest.raises(SourceError, match="renamed or dropped during the full load"):
            producer.run()
        return
    try:
        # Streaming from the snapshot's position meets the RENAME and loads b2 then.
        producer._full_load()
    finally:
        producer.writer.close()
        producer.conn.close()
    state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    assert state is not None and state.snapshot_status == "done"
    assert state.tables[f"{db}.a"].rows == 1 and state.tables[f"{db}.b"].done
