"""Row comparison of one table by primary-key ranges: the source is cut into chunks, each
chunk's row count and checksum are computed in both databases, and a chunk that differs is
bisected (cut into `fanout` parts by the side with more rows there) until a part is small
enough to read its rows in canonical text and name each missing, extra or changed row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from headwater.validate.keyrange import KeyRange
from headwater.validate.result import RowDiff, TableValidation
from headwater.validate.table_side import CanonicalRow, TableSide

Progress = Callable[[int, int], None]  # (chunks done, chunks in all)


@dataclass(frozen=True)
class ChunkPlan:
    chunk_rows: int = 20_000
    leaf_rows: int = 64
    fanout: int = 8
    max_rows: int = 100  # differing rows reported in detail
    max_depth: int = 40


@dataclass
class _Pair:
    src: TableSide
    dst: TableSide
    sconn: Connection
    dconn: Connection


def compare_rows(
    src: list[CanonicalRow],
    dst: list[CanonicalRow],
    key_names: tuple[str, ...],
    columns: tuple[str, ...],
) -> list[RowDiff]:
    """The differences between the same key range read on both sides."""
    theirs = {r.key_text: r for r in dst}
    diffs = []
    for row in src:
        other = theirs.pop(row.key_text, None)
        key = dict(zip(key_names, row.key_text, strict=True))
        if other is None:
            diffs.append(RowDiff("missing", key, native_key=row.key))
        elif other.values != row.values:
            changed = [
                c for c, a, b in zip(columns, row.values, other.values, strict=True) if a != b
            ]
            diffs.append(RowDiff("changed", key, changed, native_key=row.key))
    for row in theirs.values():
        diffs.append(
            RowDiff("extra", dict(zip(key_names, row.key_text, strict=True)), native_key=row.key)
        )
    return diffs


class TableComparer:
    """Compares one table; fills a TableValidation."""

    def __init__(self, pair: _Pair, plan: ChunkPlan, result: TableValidation) -> None:
        self.pair, self.plan, self.result = pair, plan, result
        schema = pair.src.schema
        self.key_names = schema.primary_key
        self.columns = schema.column_names

    def _checksums(self, rng: KeyRange) -> tuple[tuple[int, int], tuple[int, int]]:
        p = self.pair
        return p.src.checksum(p.sconn, rng), p.dst.checksum(p.dconn, rng)

    def _record(self, diffs: list[RowDiff]) -> None:
        self.result.differences += len(diffs)
        room = self.plan.max_rows - len(self.result.rows)
        self.result.rows.extend(diffs[: max(0, room)])
        self.extra_keys.extend(d for d in diffs[max(0, room) :])

    def _leaf(self, rng: KeyRange, limit: int) -> None:
        p = self.pair
        src = p.src.rows(p.sconn, rng, limit)
        dst = p.dst.rows(p.dconn, rng, limit)
        self._record(compare_rows(src, dst, self.key_names, self.columns))

    def narrow(self, rng: KeyRange, counts: tuple[int, int], depth: int = 0) -> None:
        """Find the differing rows of a range whose checksums differ."""
        biggest = max(counts)
        if biggest <= self.plan.leaf_rows or depth >= self.plan.max_depth:
            # Room beyond the counted rows: under CDC the range may have grown since.
            self._leaf(rng, 2 * biggest + self.plan.leaf_rows)
            return
        p = self.pair
        side, conn = (p.src, p.sconn) if counts[0] >= counts[1] else (p.dst, p.dconn)
        per_part = -(-biggest // self.plan.fanout)
        for part in rng.split(side.split_points(conn, rng, per_part)):
            mine, theirs = self._checksums(part)
            if mine != theirs:
                self.narrow(part, (mine[0], theirs[0]), depth + 1)

    def run(self, progress: Progress | None) -> None:
        p, res = self.pair, self.result
        res.source_rows = p.src.count(p.sconn)
        res.target_rows = p.dst.count(p.dconn)
        self.extra_keys: list[RowDiff] = []
        points = p.src.split_points(p.sconn, KeyRange(), self.plan.chunk_rows)
        chunks = KeyRange().split(points)
        res.chunks = len(chunks)
        for done, chunk in enumerate(chunks, 1):
            mine, theirs = self._checksums(chunk)
            if mine != theirs:
                res.chunks_differing += 1
                self.narrow(chunk, (mine[0], theirs[0]))
            if progress:
                progress(done, len(chunks))


def compare_table(
    src: TableSide,
    dst: TableSide,
    sconn: Connection,
    dconn: Connection,
    result: TableValidation,
    plan: ChunkPlan = ChunkPlan(),
    progress: Progress | None = None,
) -> list[RowDiff]:
    """Compare one table into `result`; returns the differing rows beyond the detail cap
    (their keys, for a recheck)."""
    comparer = TableComparer(_Pair(src, dst, sconn, dconn), plan, result)
    comparer.run(progress)
    return comparer.extra_keys
