"""Which table each relation of the stream is, followed by OID so that a rename is seen in
stream order. pgoutput sends a Relation message before a table's first change in a session
and again after its definition changed, including after `ALTER TABLE ... RENAME`, under
the name the table had at that point of the log. Pure apart from the injected `describe`.

What a rename does (as the MySQL producer does, see docs/postgres-source.md): the old name
is emptied in the target (a `t` event on its topic); the new name, when the task selects
it, is emptied too and reported in `moves` so the producer loads it again while the stream
runs; when it does not, the table is no longer followed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, MutableMapping
from dataclasses import dataclass

from producers.postgres.pgoutput import Relation
from schemas.envelope import ChangeEvent, SourceInfo
from schemas.tables import TableId, TableSchema

Describe = Callable[[Relation], TableSchema]


@dataclass(frozen=True, slots=True)
class TableMove:
    """A relation changed its place in the task: renamed (`old` and `new`), renamed out of
    the selection (`new` None), or come into it (`old` None). The producer loads `new`."""

    oid: int
    old: TableId | None
    new: TableId | None


def truncate_event(source_name: str, db: str, table: TableId, lsn: int) -> ChangeEvent:
    """A truncate that no source TRUNCATE stands for (it empties a name a table left or
    came to), named by the stream position `lsn` it was decided at. It carries no commit
    position, so a producer resuming after a crash writes it again rather than skipping it;
    the sinks pass over a copy of a truncate they executed."""
    now = int(time.time() * 1000)
    source = SourceInfo(
        connector="postgresql",
        name=source_name,
        db=db,
        table=table,
        ts_ms=now,
        snapshot="false",
        lsn=lsn,
    )
    return ChangeEvent("t", source, None, None, now)


@dataclass(slots=True)
class Known:
    """A table the task follows (loaded, or being loaded): its name, and the stream
    position from which the name holds. A Relation message of a transaction committed
    before that position under another name is the stream replaying changes from before
    a rename."""

    name: TableId
    since: int


class RelationTracker:
    """The schema of every followed relation by OID, and the tables the task follows.

    `known` (by OID) is shared with the producer, across reconnects. A selected relation
    outside it came into the selection (renamed in, or created under FOR ALL TABLES) and is
    reported in `moves`; one under another name than its known one was renamed (or, before
    the name's `since`, is replayed from before a rename). None: every selected relation
    counts as loaded and renames are seen only between messages of one session."""

    def __init__(
        self,
        source_name: str,
        db: str,
        selected: Container[TableId],
        describe: Describe,
        known: MutableMapping[int, Known] | None = None,
    ) -> None:
        self.source_name = source_name
        self.db = db
        self.selected = selected
        self.describe = describe
        self.known = known
        self.relations: dict[int, TableSchema] = {}
        self.moves: list[TableMove] = []
        self._replaying: set[int] = set()

    def on_relation(self, msg: Relation, lsn: int) -> list[ChangeEvent]:
        """Learn `msg`, sent in the transaction that commits at `lsn`; the truncates a
        rename or an arrival calls for, named by that position."""
        table = TableId(msg.namespace, msg.name)
        followed = self.relations.get(msg.oid)
        known = self.known.get(msg.oid) if self.known is not None else None
        if followed is None and known is not None and known.name != table:
            if lsn < known.since:
                return self._replayed(msg.oid, known.name, lsn)
            return self._renamed(msg, known.name, lsn)
        if followed is not None and followed.table != table:
            return self._renamed(msg, followed.table, lsn)
        if table not in self.selected:
            return []
        schema = self.relations[msg.oid] = self.describe(msg)
        if followed is not None or self.known is None or known is not None:
            # A new shape (ALTER TABLE), or the first message of a followed table.
            return []
        self.known[msg.oid] = Known(table, lsn)
        self.moves.append(TableMove(msg.oid, None, table))
        return [self._truncate(schema.table, lsn)]

    def _replayed(self, oid: int, name: TableId, lsn: int) -> list[ChangeEvent]:
        """Changes from before a rename, sent again (the slot resends what was not
        confirmed): dropped, and the table reloaded under its name now, which covers them
        whatever renames came between."""
        if oid in self._replaying:
            return []
        self._replaying.add(oid)
        self.moves.append(TableMove(oid, None, name))
        return [self._truncate(name, lsn)]

    def _renamed(self, msg: Relation, old: TableId, lsn: int) -> list[ChangeEvent]:
        table = TableId(msg.namespace, msg.name)
        events = [self._truncate(old, lsn)]
        self.relations.pop(msg.oid, None)
        self._replaying.discard(msg.oid)
        if self.known is not None:
            self.known.pop(msg.oid, None)
        if table in self.selected:
            self.relations[msg.oid] = self.describe(msg)
            if self.known is not None:
                self.known[msg.oid] = Known(table, lsn)
            events.append(self._truncate(table, lsn))
            self.moves.append(TableMove(msg.oid, old, table))
        else:
            self.moves.append(TableMove(msg.oid, old, None))
        self._reload_taken_name(msg.oid, old)
        return events

    def _reload_taken_name(self, oid: int, name: TableId) -> None:
        """Another followed table holds the name just emptied (a swap, or a table the
        producer added while the stream was behind): load it again after the truncate."""
        for other, known in (self.known or {}).items():
            if other != oid and known.name == name:
                self.moves.append(TableMove(other, None, name))

    def _truncate(self, table: TableId, lsn: int) -> ChangeEvent:
        return truncate_event(self.source_name, self.db, table, lsn)
