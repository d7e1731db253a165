"""Everything that differs between MariaDB and MySQL 8, in one place: how a consistent
snapshot learns its binlog position, the GTID forms and how a reader resumes from one, and
the names of the privileges binlog reading needs.

MariaDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT` makes the snapshot's binlog file and
offset visible in `SHOW STATUS LIKE 'binlog_snapshot_%'`, without any lock; the GTID state
there is `BINLOG_GTID_POS(file, pos)`. GTIDs are `domain-server-seq`, one per domain.

MySQL 8: no such status; a brief `FLUSH TABLES WITH READ LOCK` stops commits while the
transaction starts and `SHOW MASTER STATUS` (`SHOW BINARY LOG STATUS` from 8.4) reads the
position and the executed GTID set (`uuid:1-N`), then `UNLOCK TABLES`; the lock lasts those
three statements. The GTID forms themselves are parsed in `gtid.py`.

Which statement each flavor runs is decided by pure functions (tested without a server); the
few functions that send them are all that needs a MySQL 8 server to check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from producers.errors import SourceError
from producers.mysql.connection import Connection
from producers.mysql.gtid import MariadbGtidPos, MysqlGtidSet
from producers.mysql.position import BinlogPosition

_REPEATABLE_READ = "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"
_START_SNAPSHOT = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"
_MARIADB_SNAPSHOT_STATUS = "SHOW STATUS LIKE 'binlog_snapshot_%%'"
_ALIASES = {
    "REPLICATION SLAVE": ("REPLICATION REPLICA",),
    "BINLOG MONITOR": ("REPLICATION CLIENT",),
}


@dataclass(frozen=True, slots=True)
class Flavor:
    """The server family and version of a source."""

    mariadb: bool
    version: str

    @property
    def version_number(self) -> tuple[int, ...]:
        """`8.0.36-log` -> (8, 0, 36)."""
        found = re.match(r"\d+(?:\.\d+)*", self.version)
        return tuple(int(n) for n in found.group(0).split(".")) if found else (0,)

    @property
    def monitor_privilege(self) -> str:
        return "BINLOG MONITOR" if self.mariadb else "REPLICATION CLIENT"

    def has_privilege(self, privilege: str, global_grants: str) -> bool:
        """Whether `SHOW GRANTS` lines on `*.*` (upper case) grant `privilege` under any of
        its names (MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR; both servers
        accept REPLICATION REPLICA for REPLICATION SLAVE)."""
        return any(name in global_grants for name in (privilege, *_ALIASES.get(privilege, ())))

    def cdc_privileges(self) -> list[str]:
        """The global privileges binlog CDC needs besides SELECT (RELOAD on MySQL for the
        snapshot's FLUSH TABLES WITH READ LOCK)."""
        needed = ["REPLICATION SLAVE", self.monitor_privilege]
        return needed if self.mariadb else [*needed, "RELOAD"]

    @property
    def status_command(self) -> str:
        """The binlog end and GTID state; MySQL 8.4 removed SHOW MASTER STATUS."""
        if self.mariadb or self.version_number < (8, 4):
            return "SHOW MASTER STATUS"
        return "SHOW BINARY LOG STATUS"

    def snapshot_statements(self) -> list[str]:
        """What `start_consistent_snapshot` sends, in order."""
        if self.mariadb:
            return [_REPEATABLE_READ, _START_SNAPSHOT, _MARIADB_SNAPSHOT_STATUS]
        return [
            _REPEATABLE_READ,
            "FLUSH TABLES WITH READ LOCK",
            _START_SNAPSHOT,
            self.status_command,
            "UNLOCK TABLES",
        ]


def detect(conn: Connection) -> Flavor:
    version = str(_scalar(conn, "SELECT VERSION()"))
    return Flavor("mariadb" in version.lower(), version)


def _scalar(conn: Connection, query: str, args: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, args)
        row = cur.fetchone()
    return row[0] if row else None


def current_position(conn: Connection, flavor: Flavor) -> BinlogPosition:
    """The end of the binlog now (what `headwater status` measures progress against)."""
    with conn.cursor() as cur:
        cur.execute(flavor.status_command)
        row = cur.fetchone()
    if row is None:
        return BinlogPosition("", 0)
    if flavor.mariadb:
        file, pos = str(row[0]), int(row[1])
        gtid = str(_scalar(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos)) or "")
        return BinlogPosition(file, pos, gtid)
    return mysql_status_position(row)


def mysql_status_position(row: Sequence[Any]) -> BinlogPosition:
    """A MySQL `SHOW MASTER STATUS` row (File, Position, Binlog_Do_DB, Binlog_Ignore_DB,
    Executed_Gtid_Set) as a position; the set is normalised (MySQL wraps it with newlines)."""
    gtid = str(row[4] or "") if len(row) > 4 else ""
    return BinlogPosition(str(row[0]), int(row[1]), str(MysqlGtidSet.parse(gtid)))


def start_consistent_snapshot(conn: Connection, flavor: Flavor) -> BinlogPosition:
    """Begin the snapshot transaction on `conn` with `flavor.snapshot_statements()`; the
    binlog position it reads at."""
    statements = flavor.snapshot_statements()
    with conn.cursor() as cur:
        if flavor.mariadb:
            isolation, start, status = statements
            cur.execute(isolation)
            cur.execute(start)
            cur.execute(status)
            found = {str(k).lower(): str(v) for k, v in cur.fetchall()}
            file = found["binlog_snapshot_file"]
            pos = int(found["binlog_snapshot_position"])
            gtid = _scalar(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
            return BinlogPosition(file, pos, str(gtid or ""))
        isolation, lock, start, status, unlock = statements
        cur.execute(isolation)
        cur.execute(lock)
        try:
            cur.execute(start)
            cur.execute(status)
            row = cur.fetchone()
        finally:
            cur.execute(unlock)
    if row is None:
        raise SourceError(
            "the source has no binary log (SHOW MASTER STATUS is empty): turn on log_bin"
        )
    return mysql_status_position(row)


class GtidTracker:
    """The GTID state after each transaction seen: per MariaDB domain the last GTID, or the
    MySQL executed set extended by each transaction's GTID."""

    def __init__(self, flavor: Flavor, start: str) -> None:
        self._state: MariadbGtidPos | MysqlGtidSet = (
            MariadbGtidPos.parse(start) if flavor.mariadb else MysqlGtidSet.parse(start)
        )

    def add(self, gtid: str) -> None:
        """Record the GTID of a transaction that begins (committed at its XidEvent)."""
        self._state.add(gtid)

    def state(self) -> str:
        return str(self._state)


def reader_resume_args(flavor: Flavor, position: BinlogPosition, by_gtid: bool) -> dict[str, Any]:
    """BinLogStreamReader arguments that resume right after `position`.

    pymysqlreplication ignores log_file/log_pos when `is_mariadb=True` without
    `auto_position` (it starts at the first binlog), so file/offset resumes run with
    `is_mariadb=False`, which still parses MariaDB's GTID events.
    """
    if by_gtid and position.gtid:
        return {"is_mariadb": flavor.mariadb, "auto_position": position.gtid}
    return {
        "is_mariadb": False,
        "log_file": position.file,
        "log_pos": position.pos,
        "resume_stream": True,
    }
