"""The MySQL/MariaDB source's bad-input checks, against the real MariaDB where the server
allows it (users with missing privileges, a table without a key, a clashing server id, a
purged binlog position) and on the variables alone for server settings the shared test
server must keep (binlog_format, binlog_row_image, binlog_row_metadata, log_bin)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from headwater.config import TaskConfig
from headwater.preflight import check_source
from producers.errors import SourceError
from producers.mysql import catalog
from producers.mysql.binlog import check_not_purged
from producers.mysql.connection import connect
from producers.mysql.position import BinlogPosition
from producers.mysql.producer import MysqlProducer, open_checked
from producers.task_state import TaskState, TaskStateStore
from tests.mysql_support import execute, mysql_db, mysql_task

pytestmark = pytest.mark.integration
__all__ = ["mysql_db", "mysql_task"]

GOOD = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}


@pytest.mark.parametrize(
    ("name", "value", "fix"),
    [
        ("binlog_format", "MIXED", "SET GLOBAL binlog_format = 'ROW'"),
        ("binlog_format", "STATEMENT", "binlog_format = ROW"),
        ("binlog_row_image", "MINIMAL", "SET GLOBAL binlog_row_image = 'FULL'"),
        ("binlog_row_metadata", "MINIMAL", "SET GLOBAL binlog_row_metadata = 'FULL'"),
        ("binlog_row_metadata", "NO_LOG", "binlog_row_metadata = FULL"),
        ("log_bin", "OFF", "log-bin = mysql-bin"),
    ],
)
def test_each_binlog_setting_gets_one_line_naming_the_fix(name: str, value: str, fix: str) -> None:
    problem = catalog.cdc_settings_problem({**GOOD, name: value})
    assert problem is not None and fix in problem and "\n" not in problem


def test_a_server_without_binlog_row_metadata_is_told_to_upgrade() -> None:
    old = {k: v for k, v in GOOD.items() if k != "binlog_row_metadata"}
    problem = catalog.cdc_settings_problem(old)
    assert problem is not None and "upgrade the server" in problem and "\n" not in problem


def test_the_local_mariadb_passes_every_check(
    mysql_task: Callable[..., TaskConfig], mysql_db: str
) -> None:
    execute(
        mysql_db, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (k char(2) PRIMARY KEY)"
    )
    assert catalog.cdc_settings_problem(GOOD) is None
    assert check_source(mysql_task()) == 2


@pytest.fixture
def limited_user(mysql_db: str) -> Iterator[Callable[[str], str]]:
    """Create users with the given grants; their URLs. Dropped afterwards."""
    created: list[str] = []
    host, db = mysql_db.rsplit("/", 1)

    def make(grants: str) -> str:
        name = f"hw_{uuid.uuid4().hex[:8]}"
        execute(mysql_db, f"CREATE USER '{name}'@'127.0.0.1'")
        if grants:
            execute(mysql_db, f"GRANT {grants} TO '{name}'@'127.0.0.1'")
        created.append(name)
        return host.replace("root@", f"{name}@") + "/" + db

    yield make
    for name in created:
        execute(mysql_db, f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")


@pytest.mark.parametrize(
    ("grants", "missing"),
    [
        ("SELECT ON *.*", "REPLICATION SLAVE, BINLOG MONITOR"),
        ("SELECT, REPLICATION SLAVE ON *.*", "BINLOG MONITOR"),
        ("SELECT, BINLOG MONITOR ON *.*", "REPLICATION SLAVE"),
    ],
)
def test_missing_privileges_are_named_with_the_grant(
    mysql_task: Callable[..., TaskConfig],
    mysql_db: str,
    limited_user: Callable[[str], str],
    grants: str,
    missing: str,
) -> None:
    execute(mysql_db, "CREATE TABLE a (id int PRIMARY KEY)")
    task = mysql_task(source={"url": limited_user(grants)})
    with pytest.raises(SourceError) as info:
        open_checked(task)
    message = str(info.value)
    assert f"lacks {missing}:" in message and f"GRANT {missing} ON *.* TO" in message


def test_least_privileges_are_enough(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, limited_user: Callable[[str], str]
) -> None:
    execute(mysql_db, "CREATE TABLE a (id int PRIMARY KEY)")
    url = limited_user("REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.*")
    conn, _flavor, tables = open_checked(mysql_task(source={"url": url}))
    conn.close()
    assert len(tables) == 1


def test_table_without_primary_key_is_named(
    mysql_task: Callable[..., TaskConfig], mysql_db: str
) -> None:
    execute(mysql_db, "CREATE TABLE keyed (id int PRIMARY KEY)", "CREATE TABLE loose (v int)")
    with pytest.raises(SourceError, match=r"without a primary key: t_my_\w+\.loose; add a primary"):
        check_source(mysql_task())


def test_server_id_of_the_source_itself_is_refused(
    mysql_task: Callable[..., TaskConfig], mysql_db: str
) -> None:
    execute(mysql_db, "CREATE TABLE a (id int PRIMARY KEY)")
    with connect(mysql_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@server_id")
        row = cur.fetchone()
    assert row is not None
    with pytest.raises(SourceError, match=r"set source\.server_id to a number"):
        check_source(mysql_task(source={"server_id": int(row[0])}))


def test_no_table_selected_names_the_pattern(
    mysql_task: Callable[..., TaskConfig], mysql_db: str
) -> None:
    with pytest.raises(SourceError, match="no source table matches"):
        check_source(mysql_task())


@pytest.mark.parametrize("resume_by", ["position", "gtid"])
def test_purged_binlog_position_says_a_new_snapshot_is_needed(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, resume_by: str
) -> None:
    execute(mysql_db, "CREATE TABLE a (id int PRIMARY KEY)")
    task = mysql_task(mode="cdc", source={"resume_by": resume_by})
    with connect(mysql_db) as conn:
        if resume_by == "position":
            gone = BinlogPosition("mariadb-bin.999998", 4)
            with pytest.raises(SourceError, match=r"mariadb-bin\.999998 was purged"):
                check_not_purged(conn, task, gone)
            return
    # A GTID the server never wrote (domain 0, an unknown server id) cannot be resumed from.
    store = TaskStateStore(task.kafka.bootstrap_servers)
    store.ensure_topic()
    state = TaskState(task.name, snapshot_status="skipped")
    state.binlog = BinlogPosition("mariadb-bin.000001", 4, "0-4242-99999999").to_dict()
    store.save(state)
    producer = MysqlProducer(task, threading.Event())
    with pytest.raises(SourceError) as info:
        producer.run()
    message = str(info.value)
    assert "a new snapshot is needed" in message and "`headwater cleanup <task file>`" in message
