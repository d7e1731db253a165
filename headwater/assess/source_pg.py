"""Whether a PostgreSQL source is ready for CDC: wal_level, free replication slots and WAL
senders, the REPLICATION attribute (or superuser) of the task's user, and the REPLICA
IDENTITY of each selected table."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from headwater.assess.findings import Finding, failed, passed, warned
from headwater.config import TaskConfig
from headwater.inventory.foreign_keys import pg_regclass
from schemas.tables import TableSchema

AREA = "source"

_SETTINGS_SQL = """
SELECT current_setting('wal_level'),
       current_setting('max_replication_slots')::int,
       (SELECT count(*) FROM pg_replication_slots),
       current_setting('max_wal_senders')::int,
       (SELECT count(*) FROM pg_stat_replication),
       (SELECT count(*) FROM pg_replication_slots WHERE slot_name = :slot)
"""

_ROLE_SQL = (
    "SELECT rolsuper, rolreplication, current_user FROM pg_roles WHERE rolname = current_user"
)

_IDENTITY = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "INDEX"}


def server_findings(conn: Connection, task: TaskConfig) -> list[Finding]:
    row = conn.execute(sa.text(_SETTINGS_SQL), {"slot": task.slot_name}).one()
    level, max_slots, slots, max_senders, senders, own_slot = row
    found = []
    if level == "logical":
        found.append(passed(AREA, "wal_level", "logical"))
    else:
        found.append(
            failed(
                AREA,
                "wal_level",
                f"{level}: logical decoding is off",
                "ALTER SYSTEM SET wal_level = logical; restart PostgreSQL",
            )
        )
    free_slots = max_slots - slots
    if own_slot:
        found.append(passed(AREA, "replication slots", f"the task's slot {task.slot_name} exists"))
    elif free_slots > 0:
        found.append(passed(AREA, "replication slots", f"{free_slots} of {max_slots} free"))
    else:
        found.append(
            failed(
                AREA,
                "replication slots",
                f"all {max_slots} in use",
                "raise max_replication_slots (restart) or drop unused slots",
            )
        )
    free_senders = max_senders - senders
    if free_senders > 0:
        found.append(passed(AREA, "WAL senders", f"{free_senders} of {max_senders} free"))
    else:
        found.append(
            failed(
                AREA,
                "WAL senders",
                f"all {max_senders} busy",
                "raise max_wal_senders (restart) or stop other replication clients",
            )
        )
    return found


def role_findings(conn: Connection) -> list[Finding]:
    superuser, replication, user = conn.execute(sa.text(_ROLE_SQL)).one()
    if superuser or replication:
        what = "superuser" if superuser else "REPLICATION"
        return [passed(AREA, "replication privilege", f"{user} has {what}")]
    return [
        failed(
            AREA,
            "replication privilege",
            f"{user} has neither REPLICATION nor superuser",
            f'ALTER ROLE "{user}" WITH REPLICATION',
        )
    ]


def replica_identity(conn: Connection, schema: TableSchema) -> str:
    """DEFAULT, FULL, INDEX or NOTHING: what the log carries of an updated or deleted row."""
    ident = conn.execute(
        sa.text("SELECT relreplident FROM pg_class WHERE oid = to_regclass(:t)"),
        {"t": pg_regclass(conn, schema.table)},
    ).scalar_one()
    return _IDENTITY.get(str(ident), str(ident))


def identity_findings(conn: Connection, schemas: Sequence[TableSchema]) -> list[Finding]:
    found = []
    for schema in schemas:
        name = pg_regclass(conn, schema.table)
        kind = replica_identity(conn, schema)
        subject = f"{schema.table} replica identity"
        if kind == "NOTHING":
            found.append(
                failed(
                    AREA,
                    subject,
                    "NOTHING: updates and deletes cannot be replicated (PostgreSQL refuses them)",
                    f"ALTER TABLE {name} REPLICA IDENTITY DEFAULT",
                )
            )
        elif kind == "DEFAULT" and not schema.primary_key:
            found.append(
                failed(
                    AREA,
                    subject,
                    "DEFAULT without a primary key: updates and deletes carry no key",
                    f"add a primary key to {name}, or ALTER TABLE {name} REPLICA IDENTITY FULL "
                    "(see docs/keyless-tables.md)",
                )
            )
        elif kind == "FULL":
            found.append(
                warned(AREA, subject, "FULL: every update logs the whole old row (more WAL)")
            )
        else:
            found.append(passed(AREA, subject, kind))
    return found


def select_findings(conn: Connection, schemas: Sequence[TableSchema]) -> list[Finding]:
    missing = [
        str(s.table)
        for s in schemas
        if not conn.execute(
            sa.text("SELECT has_table_privilege(to_regclass(:t), 'SELECT')"),
            {"t": pg_regclass(conn, s.table)},
        ).scalar_one()
    ]
    if not missing:
        return [passed(AREA, "SELECT privilege", f"on all {len(schemas)} selected tables")]
    return [
        failed(
            AREA,
            "SELECT privilege",
            f"missing on {', '.join(missing)}",
            "GRANT SELECT ON those tables TO the task's user",
        )
    ]


def assess_postgres_source(
    conn: Connection, task: TaskConfig, schemas: Sequence[TableSchema]
) -> list[Finding]:
    found = select_findings(conn, schemas)
    if task.mode == "full-load":
        return [passed(AREA, "CDC", "full-load task: CDC settings not needed"), *found]
    return [
        *server_findings(conn, task),
        *role_findings(conn),
        *found,
        *identity_findings(conn, schemas),
    ]
