"""The MySQL-8-versus-MariaDB differences that need no server: GTID sets and positions
(parse, format, add, containment), the statements each flavor sends for a snapshot and for
the binlog end, the privileges it needs, and the position read from SHOW MASTER STATUS."""

from __future__ import annotations

import pytest

from producers.mysql.flavor import Flavor, GtidTracker, mysql_status_position
from producers.mysql.gtid import GtidFormatError, MariadbGtidPos, MysqlGtidSet

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "4f22ab58-82db-22f2-af44-d91bb8530673"

MARIADB = Flavor(True, "10.11.19-MariaDB-0+deb12u1-log")
MYSQL80 = Flavor(False, "8.0.36")
MYSQL84 = Flavor(False, "8.4.3")
MYSQL9 = Flavor(False, "9.1.0-commercial")


@pytest.mark.parametrize(
    ("text", "formatted"),
    [
        ("", ""),
        (f"{U1}:1-5", f"{U1}:1-5"),
        (f"{U1.upper()}:1-5:7", f"{U1}:1-5:7"),
        (f"{U1}:7-9:1-5:6", f"{U1}:1-9"),  # sorted and merged
        (f"{U2}:3,\n{U1}:1-2", f"{U1}:1-2,{U2}:3"),  # MySQL wraps long sets with newlines
        (f"{U1}:1-5:Backup:1-2", f"{U1}:1-5:backup:1-2"),  # 8.3+ tags, lower-cased
    ],
)
def test_mysql_gtid_set_parses_and_formats(text: str, formatted: str) -> None:
    assert str(MysqlGtidSet.parse(text)) == formatted


@pytest.mark.parametrize("bad", [f"{U1}", f"{U1}:0", f"{U1}:5-3", f"{U1}:x-y"])
def test_a_bad_mysql_gtid_set_is_an_error(bad: str) -> None:
    with pytest.raises(GtidFormatError):
        MysqlGtidSet.parse(bad)


def test_mysql_gtid_set_add_and_contains() -> None:
    gtids = MysqlGtidSet.parse(f"{U1}:1-5:8")
    assert gtids.contains(f"{U1}:5") and not gtids.contains(f"{U1}:6")
    assert not gtids.contains(f"{U2}:1")
    gtids.add(f"{U1}:6")
    gtids.add(f"{U1}:7")
    gtids.add(f"{U2}:1")
    assert str(gtids) == f"{U1}:1-8,{U2}:1"
    assert gtids.covers(MysqlGtidSet.parse(f"{U1}:2-4,{U2}:1"))
    assert not gtids.covers(MysqlGtidSet.parse(f"{U1}:8-9"))
    gtids.add(f"{U1}:tag:3")
    assert gtids.contains(f"{U1}:tag:3") and not gtids.contains(f"{U1}:other:3")
    with pytest.raises(GtidFormatError):
        gtids.add(f"{U1}:1-2")


def test_mariadb_gtid_position_keeps_the_last_gtid_of_each_domain() -> None:
    pos = MariadbGtidPos.parse("1-2-7, 0-1-30")
    assert str(pos) == "0-1-30,1-2-7"
    pos.add("0-3-31")  # another server of the same domain
    pos.add("2-1-1")
    assert str(pos) == "0-3-31,1-2-7,2-1-1"
    assert pos.contains("0-1-31") and pos.contains("1-9-5")
    assert not pos.contains("1-2-8") and not pos.contains("5-1-1")
    with pytest.raises(GtidFormatError):
        MariadbGtidPos.parse("0-1")


def test_the_tracker_follows_each_flavor() -> None:
    mariadb = GtidTracker(MARIADB, "0-1-30")
    mariadb.add("0-1-31")
    assert mariadb.state() == "0-1-31"
    mysql = GtidTracker(MYSQL80, f"{U1}:1-5")
    mysql.add(f"{U1}:6")
    assert mysql.state() == f"{U1}:1-6"
    assert GtidTracker(MYSQL80, "").state() == ""


def test_versions_and_status_commands() -> None:
    assert MARIADB.version_number == (10, 11, 19)
    assert MYSQL9.version_number == (9, 1, 0)
    assert MARIADB.status_command == "SHOW MASTER STATUS"
    assert MYSQL80.status_command == "SHOW MASTER STATUS"
    assert MYSQL84.status_command == "SHOW BINARY LOG STATUS"  # 8.4 removed the old name
    assert MYSQL9.status_command == "SHOW BINARY LOG STATUS"


def test_snapshot_statements_lock_only_on_mysql() -> None:
    mariadb = MARIADB.snapshot_statements()
    assert not any("LOCK" in s for s in mariadb)
    assert "binlog_snapshot_" in mariadb[-1]
    mysql = MYSQL84.snapshot_statements()
    lock, unlock = mysql.index("FLUSH TABLES WITH READ LOCK"), mysql.index("UNLOCK TABLES")
    # The transaction starts and the position is read while commits wait, then unlock.
    assert mysql[lock + 1 : unlock] == [
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        "SHOW BINARY LOG STATUS",
    ]


def test_privileges_by_flavor() -> None:
    assert MARIADB.cdc_privileges() == ["REPLICATION SLAVE", "BINLOG MONITOR"]
    assert MYSQL80.cdc_privileges() == ["REPLICATION SLAVE", "REPLICATION CLIENT", "RELOAD"]


def test_position_from_a_mysql_status_row() -> None:
    row = ("binlog.000007", 1234, "", "", f"{U2}:1-3,\n{U1}:1-20")
    position = mysql_status_position(row)
    assert (position.file, position.pos) == ("binlog.000007", 1234)
    assert position.gtid == f"{U1}:1-20,{U2}:1-3"
    assert mysql_status_position(("binlog.000001", 4, "", "", "")).gtid == ""


@pytest.mark.parametrize(
    ("flavor", "grants", "privilege", "held"),
    [
        (MARIADB, "REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO", "BINLOG MONITOR", True),
        (MARIADB, "BINLOG MONITOR ON *.* TO", "BINLOG MONITOR", True),
        (MARIADB, "SELECT ON *.* TO", "BINLOG MONITOR", False),
        (MYSQL84, "REPLICATION REPLICA ON *.* TO", "REPLICATION SLAVE", True),
        (MYSQL80, "RELOAD, REPLICATION CLIENT ON *.* TO", "RELOAD", True),
        (MYSQL80, "REPLICATION CLIENT ON *.* TO", "RELOAD", False),
    ],
)
def test_privileges_are_recognised_under_each_name(
    flavor: Flavor, grants: str, privilege: str, held: bool
) -> None:
    assert flavor.has_privilege(privilege, grants) is held
