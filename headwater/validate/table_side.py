"""One table on one side of a validation: the SQL that counts, checksums, splits and reads
its rows in canonical text, composed once from quoted identifiers and the canonical
expressions of headwater.validate.canonical. Only keys and aggregates travel, except for the
few rows of a range already narrowed to a leaf."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from headwater.databases import Endpoint, quote
from headwater.validate import canonical
from headwater.validate.keyrange import Key, KeyRange, key_list, predicate
from schemas.tables import TableSchema

WHOLE_TABLE = KeyRange()


@dataclass(frozen=True)
class CanonicalRow:
    """A row as validation compares it: its key as read (to bind again), its key and all
    column values as canonical text."""

    key: Key
    key_text: tuple[str, ...]
    values: tuple[str | None, ...]


@dataclass
class TableSide:
    endpoint: Endpoint
    where: tuple[str | None, str]
    schema: TableSchema  # the source table's description; the target has the same columns
    exact: bool  # same engine on both sides
    _table: str = field(init=False)
    _keys: list[str] = field(init=False)
    _texts: list[str] = field(init=False)
    _key_texts: list[str] = field(init=False)

    def __post_init__(self) -> None:
        eng, kind = self.endpoint.engine, self.endpoint.kind
        self._table = self.endpoint.table(self.where)
        self._keys = [quote(eng, k) for k in self.schema.primary_key]
        by_name = {
            c.name: canonical.escape_colons(
                canonical.value_text(kind, c, quote(eng, c.name), self.schema.engine, self.exact)
            )
            for c in self.schema.columns
        }
        self._texts = [by_name[c.name] for c in self.schema.columns]
        self._key_texts = [by_name[k] for k in self.schema.primary_key]

    @property
    def kind(self) -> str:
        return self.endpoint.kind

    def _run(self, conn: Connection, query: str, params: dict[str, Any]) -> list[Any]:
        return list(conn.execute(sa.text(query), params).all())

    def _where(self, rng: KeyRange) -> tuple[str, dict[str, Any]]:
        return predicate(self.kind, self._keys, rng)

    def exists(self, conn: Connection) -> bool:
        try:
            self._run(conn, f"SELECT 1 FROM {self._table} WHERE 1=0", {})
        except sa.exc.ProgrammingError:
            conn.rollback()
            return False
        return True

    def count(self, conn: Connection, rng: KeyRange = WHOLE_TABLE) -> int:
        cond, params = self._where(rng)
        return int(
            self._run(conn, f"SELECT count(*) FROM {self._table} WHERE {cond}", params)[0][0]
        )

    def checksum(self, conn: Connection, rng: KeyRange) -> tuple[int, int]:
        """(rows, sum of row hashes) of the range."""
        cond, params = self._where(rng)
        hashed = canonical.row_hash(self.kind, canonical.row_text(self.kind, self._texts))
        query = (
            f"SELECT {canonical.chunk_checksum(self.kind, hashed)} FROM {self._table} WHERE {cond}"
        )
        rows, total = self._run(conn, query, params)[0]
        return int(rows), int(total)

    def split_points(self, conn: Connection, rng: KeyRange, rows_per_part: int) -> list[Key]:
        """Keys that cut the range into parts of `rows_per_part` rows (on this side)."""
        cond, params = self._where(rng)
        keys = ", ".join(self._keys)
        aliases = ", ".join(f"k{i}" for i in range(len(self._keys)))
        inner = ", ".join(f"{k} AS k{i}" for i, k in enumerate(self._keys))
        query = (
            f"SELECT {aliases} FROM (SELECT {inner}, row_number() OVER (ORDER BY {keys}) AS rn "
            f"FROM {self._table} WHERE {cond}) s WHERE mod(rn, :step) = 0 ORDER BY rn"
        )
        found = self._run(conn, query, {**params, "step": max(1, rows_per_part)})
        return [tuple(r) for r in found]

    def _read(
        self, conn: Connection, cond: str, params: dict[str, Any], limit: int
    ) -> list[CanonicalRow]:
        n = len(self._keys)
        columns = ", ".join([*self._keys, *self._key_texts, *self._texts])
        query = (
            f"SELECT {columns} FROM {self._table} WHERE {cond} "
            f"ORDER BY {', '.join(str(i + 1) for i in range(n))} LIMIT {int(limit)}"
        )
        return [
            CanonicalRow(tuple(r[:n]), tuple(r[n : 2 * n]), tuple(r[2 * n :]))
            for r in self._run(conn, query, params)
        ]

    def rows(self, conn: Connection, rng: KeyRange, limit: int) -> list[CanonicalRow]:
        """The range's rows in canonical text, at most `limit`."""
        cond, params = self._where(rng)
        return self._read(conn, cond, params, limit)

    def rows_by_keys(self, conn: Connection, keys: Sequence[Key]) -> list[CanonicalRow]:
        """The rows with these keys (as read on either side), in batches."""
        found: list[CanonicalRow] = []
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            cond, params = key_list(self.kind, self._keys, batch)
            found.extend(self._read(conn, cond, params, len(batch)))
        return found

    def totals(self, conn: Connection, columns: Sequence[str]) -> dict[str, Decimal | None]:
        """SUM of each column, exactly (as text)."""
        if not columns:
            return {}
        cast = "CAST(SUM({}) AS CHAR)" if self.kind == "mysql" else "sum({})::text"
        exprs = ", ".join(cast.format(quote(self.endpoint.engine, c)) for c in columns)
        row = self._run(conn, f"SELECT {exprs} FROM {self._table}", {})[0]
        return {c: None if v is None else Decimal(v) for c, v in zip(columns, row, strict=True)}

    def count_all(self) -> int:
        """The table's rows now, on a fresh connection."""
        with self.endpoint.engine.connect() as conn:
            return self.count(conn)
