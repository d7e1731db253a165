"""Whether a MySQL/MariaDB source is ready for binlog CDC: log_bin, binlog_format,
binlog_row_image, binlog_row_metadata, binlog retention, and the task user's privileges
(checked by the producer's own rule, producers.mysql.catalog.check_privileges)."""

from __future__ import annotations

from headwater.assess.findings import Finding, failed, one_line, passed, warned
from headwater.config import TaskConfig
from producers.errors import SourceError
from producers.mysql import catalog, flavor
from producers.mysql.connection import Connection

AREA = "source"

_REQUIRED = (
    ("binlog_format", "ROW"),
    ("binlog_row_image", "FULL"),
    ("binlog_row_metadata", "FULL"),
)

_DAY = 86_400


def _variables(conn: Connection) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', "
            "'binlog_row_image', 'binlog_row_metadata', 'binlog_expire_logs_seconds', "
            "'expire_logs_days')"
        )
        return {str(k).lower(): str(v) for k, v in cur.fetchall()}


def retention_finding(values: dict[str, str]) -> Finding:
    seconds = int(float(values.get("binlog_expire_logs_seconds", "0") or 0))
    if not seconds:
        seconds = int(float(values.get("expire_logs_days", "0") or 0) * _DAY)
    if not seconds:
        return warned(
            AREA,
            "binlog retention",
            "binlogs are never purged: the disk grows until someone purges them",
            "SET GLOBAL binlog_expire_logs_seconds = 604800 (7 days) or purge by hand",
        )
    if seconds < _DAY:
        return warned(
            AREA,
            "binlog retention",
            f"{seconds}s: a task stopped longer than that cannot resume",
            "SET GLOBAL binlog_expire_logs_seconds to a few days",
        )
    return passed(AREA, "binlog retention", f"{seconds / _DAY:.1f} days")


def settings_findings(values: dict[str, str]) -> list[Finding]:
    found = []
    if values.get("log_bin", "OFF").upper() == "ON":
        found.append(passed(AREA, "log_bin", "ON"))
    else:
        found.append(
            failed(AREA, "log_bin", "the binary log is off", "set log-bin in my.cnf; restart")
        )
    for name, wanted in _REQUIRED:
        value = values.get(name, "(missing)")
        if value.upper() == wanted:
            found.append(passed(AREA, name, value))
        else:
            found.append(
                failed(
                    AREA,
                    name,
                    f"{value}, binlog CDC needs {wanted}",
                    f"SET GLOBAL {name} = '{wanted}' and put it in my.cnf",
                )
            )
    found.append(retention_finding(values))
    return found


def privilege_finding(conn: Connection, cdc: bool) -> Finding:
    try:
        catalog.check_privileges(conn, flavor.detect(conn), cdc)
    except SourceError as exc:
        message = one_line(exc)
        detail, _, fix = message.partition(": ")
        return failed(AREA, "privileges", detail, fix or message)
    return passed(AREA, "privileges", "the task's user has what the producer needs")


def assess_mysql_source(conn: Connection, task: TaskConfig) -> list[Finding]:
    cdc = task.mode != "full-load"
    found = [privilege_finding(conn, cdc)]
    if not cdc:
        return [passed(AREA, "CDC", "full-load task: binlog settings not needed"), *found]
    return [*settings_findings(_variables(conn)), *found]
