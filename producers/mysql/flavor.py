"""Everything that differs between MariaDB and MySQL 8, in one place: how a consistent
snapshot learns its binlog position, the GTID forms and how a reader resumes from one, and
the names of the privileges binlog reading needs.

MariaDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT` makes the snapshot's binlog file and
offset visible in `SHOW STATUS LIKE 'binlog_snapshot_%'`, without any lock; the GTID state
there is `BINLOG_GTID_POS(file, pos)`. GTIDs are `domain-server-seq`, one per domain.

MySQL 8: no such status; a brief `FLUSH TABLES WITH READ LOCK` stops commits while the
transaction starts and `SHOW MASTER STATUS` reads the position and the executed GTID set
(`uuid:1-N`), then `UNLOCK TABLES`; the lock lasts those three statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from producers.mysql.connection import Connection
from producers.mysql.position import BinlogPosition


@dataclass(frozen=True, slots=True)
class Flavor:
    """The server family and version of a source."""

    mariadb: bool
    version: str

    @property
    def monitor_privilege(self) -> str:
        return "BINLOG MONITOR" if self.mariadb else "REPLICATION CLIENT"

    @property
    def status_command(self) -> str:
        return (
            "SHOW MASTER STATUS"
            if self.mariadb or self.version < "8.4"
            else ("SHOW BINARY LOG STATUS")
        )


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
    file, pos = str(row[0]), int(row[1])
    if flavor.mariadb:
        gtid = str(_scalar(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos)) or "")
    else:
        gtid = str(row[4] or "").replace("\n", "") if len(row) > 4 else ""
    return BinlogPosition(file, pos, gtid)


def start_consistent_snapshot(conn: Connection, flavor: Flavor) -> BinlogPosition:
    """Begin the snapshot transaction on `conn`; the binlog position it reads at."""
    with conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if flavor.mariadb:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%%'")
            status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
            file = status["binlog_snapshot_file"]
            pos = int(status["binlog_snapshot_position"])
            gtid = _scalar(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
            return BinlogPosition(file, pos, str(gtid or ""))
        cur.execute("FLUSH TABLES WITH READ LOCK")
        try:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            position = current_position(conn, flavor)
        finally:
            cur.execute("UNLOCK TABLES")
        return position


class GtidTracker:
    """The GTID state after each transaction seen: per MariaDB domain the last GTID, or the
    MySQL executed set extended by each transaction's GTID."""

    def __init__(self, flavor: Flavor, start: str) -> None:
        self.flavor = flavor
        self._domains: dict[str, str] = {}
        self._mysql: Any = None
        if flavor.mariadb:
            for gtid in filter(None, (g.strip() for g in start.split(","))):
                self._domains[gtid.split("-", 1)[0]] = gtid
        else:
            from pymysqlreplication.gtid import GtidSet

            self._mysql = GtidSet(start.replace("\n", "") or None)

    def add(self, gtid: str) -> None:
        """Record the GTID of a transaction that begins (committed at its XidEvent)."""
        if self.flavor.mariadb:
            self._domains[gtid.split("-", 1)[0]] = gtid
        else:
            from pymysqlreplication.gtid import Gtid

            self._mysql = self._mysql + Gtid(gtid)

    def state(self) -> str:
        if self.flavor.mariadb:
            return ",".join(self._domains[d] for d in sorted(self._domains, key=int))
        return str(self._mysql) if self._mysql is not None else ""


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
