"""Applies a keyless table's changes to a PostgreSQL target (the rules are in
consumers/keyless.py): the batch's net deletes are copied into a temporary stage (so both
sides of the comparison have the target column's types), then one DELETE removes, for each
distinct old row, as many equal rows (NULL equal to NULL) as it was deleted, chosen by ctid;
then one COPY inserts the net new rows. Rows are matched on their row text,
`ROW(columns)::text`, which is equal exactly when every column is (IS NOT DISTINCT FROM, and
text equality for json and the types without `=`) and lets the server hash-join the stage
with the table: one scan of the table per batch, not one per deleted row."""

from __future__ import annotations

from psycopg import sql

from consumers.ddl import qualified
from consumers.keyless import NetRows, RowChange, net
from consumers.pg_values import pg_value
from consumers.postgres_tables import PgConnection, StageTable
from schemas.tables import TableId, TableSchema

_COUNT = "__headwater_count"
"""The stage column holding how many rows equal to a staged old row are to be deleted."""

_SEQ = "__headwater_seq"
"""The stage column numbering the distinct old rows."""


def row_text(alias: str, columns: tuple[str, ...]) -> sql.Composed:
    """`ROW(alias.c1, ...)::text`: equal for two rows exactly when each column is (NULL
    included), for the same column types on both sides."""
    return sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.Identifier(alias, c) for c in columns)
    )


def delete_matching(
    target: TableId, stage: sql.Identifier, columns: tuple[str, ...]
) -> sql.Composed:
    """DELETE, for each staged row, of as many equal rows of `target` as its count."""
    return sql.SQL(
        "DELETE FROM {t} WHERE ctid IN (SELECT m.ctid FROM ("
        "SELECT t.ctid, s.{count} AS wanted,"
        " row_number() OVER (PARTITION BY s.{seq} ORDER BY t.ctid) AS nth"
        " FROM {t} AS t JOIN {s} AS s ON {left} = {right}) AS m WHERE m.nth <= m.wanted)"
    ).format(
        t=qualified(target),
        s=stage,
        count=sql.Identifier(_COUNT),
        seq=sql.Identifier(_SEQ),
        left=row_text("t", columns),
        right=row_text("s", columns),
    )


class KeylessWriter:
    """Writes keyless tables of one target connection; its stages live with the connection."""

    def __init__(self) -> None:
        self._stages: dict[TableId, StageTable] = {}
        self._count = 0

    def forget(self) -> None:
        """Temp tables die with the connection."""
        self._stages.clear()

    def ensure_stage(self, raw: PgConnection, target: TableId, schema: TableSchema) -> None:
        """Create the table's stage (outside the savepoints a refused record rolls back)."""
        stage = self._stages.get(target)
        if stage is not None and stage.columns == schema.column_names:
            return
        if stage is not None:
            raw.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage.ref))
        self._count += 1
        stage = StageTable(f"hw_keyless_{self._count}", schema.column_names)
        raw.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS"
                " SELECT NULL::int AS {}, NULL::int AS {}, {} FROM {} WITH NO DATA"
            ).format(
                sql.Identifier(stage.name),
                sql.Identifier(_SEQ),
                sql.Identifier(_COUNT),
                sql.SQL(", ").join(sql.Identifier(c) for c in stage.columns),
                qualified(target),
            )
        )
        self._stages[target] = stage

    def write(
        self, raw: PgConnection, target: TableId, schema: TableSchema, rows: list[RowChange]
    ) -> None:
        """Apply the net effect of `rows` to `target`."""
        self.ensure_stage(raw, target, schema)
        stage = self._stages[target]
        change = net(rows)
        if change.deletes:
            raw.execute(sql.SQL("DELETE FROM {}").format(stage.ref))  # an earlier attempt's
            self._stage_deletes(raw, stage, change)
            raw.execute(delete_matching(target, stage.ref, stage.columns))
        if change.inserts:
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                qualified(target), sql.SQL(", ").join(sql.Identifier(c) for c in stage.columns)
            )
            with raw.cursor() as cur, cur.copy(statement) as copy:
                for row in change.inserts:
                    copy.write_row(tuple(pg_value(row.get(c)) for c in stage.columns))

    @staticmethod
    def _stage_deletes(raw: PgConnection, stage: StageTable, change: NetRows) -> None:
        statement = sql.SQL("COPY {} ({}, {}, {}) FROM STDIN").format(
            stage.ref,
            sql.Identifier(_SEQ),
            sql.Identifier(_COUNT),
            sql.SQL(", ").join(sql.Identifier(c) for c in stage.columns),
        )
        with raw.cursor() as cur, cur.copy(statement) as copy:
            for number, (row, count) in enumerate(change.deletes):
                copy.write_row((number, count, *(pg_value(row.get(c)) for c in stage.columns)))
