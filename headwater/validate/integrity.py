"""Checks beyond rows: numeric totals per table (exact sums on each side) and referential
integrity in the target (rows whose foreign key, as the SOURCE declares it, points at no
parent row in the target)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from headwater.databases import Endpoint, quote
from headwater.inventory.foreign_keys import ForeignKey
from headwater.validate import canonical
from headwater.validate.result import OrphanCheck, TotalCheck
from headwater.validate.table_side import TableSide
from schemas.tables import TableSchema


def total_columns(schema: TableSchema, chosen: Sequence[str]) -> list[str]:
    """The columns to sum: those named in `chosen` (`col` or `schema.table.col` /
    `table.col`) that this table has, else every integer and fixed numeric column."""
    if chosen:
        names = set(schema.column_names)
        picked = []
        for item in chosen:
            table_part, _, col = item.rpartition(".")
            if table_part and table_part not in (str(schema.table), schema.table.name):
                continue
            if col in names and col not in picked:
                picked.append(col)
        return picked
    return [
        c.name
        for c in schema.columns
        if canonical.is_exact_total_type(c, schema.engine) and c.name not in schema.primary_key
    ]


def compare_totals(
    src: TableSide, dst: TableSide, sconn: Connection, dconn: Connection, columns: Sequence[str]
) -> list[TotalCheck]:
    mine, theirs = src.totals(sconn, columns), dst.totals(dconn, columns)
    return [TotalCheck(c, mine[c], theirs[c]) for c in columns]


def count_orphans(
    target: Endpoint,
    conn: Connection,
    fk: ForeignKey,
    child: tuple[str | None, str],
    parent: tuple[str | None, str],
) -> OrphanCheck:
    """Target rows of `child` whose non-null `fk` columns match no `parent` row."""
    q = target.engine
    not_null = " AND ".join(f"c.{quote(q, col)} IS NOT NULL" for col in fk.columns)
    joined = " AND ".join(
        f"p.{quote(q, pc)} = c.{quote(q, cc)}"
        for cc, pc in zip(fk.columns, fk.parent_columns, strict=True)
    )
    query = (
        f"SELECT count(*) FROM {target.table(child)} c WHERE {not_null} "
        f"AND NOT EXISTS (SELECT 1 FROM {target.table(parent)} p WHERE {joined})"
    )
    orphans = int(conn.execute(sa.text(query)).scalar_one())
    return OrphanCheck(fk.name, str(fk.table), str(fk.parent), list(fk.columns), orphans)
