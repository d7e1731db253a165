"""The change event every stage hands forward, and its Debezium-compatible Avro record.

Ops: `r` snapshot read, `c` insert, `u` update, `d` delete, `t` truncate. A delete is
followed on the topic by a tombstone (a null value) so compacted topics drop the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.avro_schemas import avro_name
from schemas.tables import TableId, TableSchema

Op = Literal["r", "c", "u", "d", "t"]
Row = dict[str, Any]

CONNECTOR_VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where an event came from and its position in the source's log."""

    connector: str
    name: str
    db: str
    table: TableId
    ts_ms: int
    snapshot: str | None = None  # "true", "last", "false" or None
    tx_id: int | None = None
    lsn: int | None = None
    file: str | None = None
    pos: int | None = None
    gtid: str | None = None
    server_id: int | None = None
    thread: int | None = None
    commit_lsn: int | None = None  # with lsn and seq: a streamed change's commit order
    seq: int | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "version": CONNECTOR_VERSION,
            "connector": self.connector,
            "name": self.name,
            "ts_ms": self.ts_ms,
            "snapshot": self.snapshot,
            "db": self.db,
            "schema": self.table.schema,
            "table": self.table.name,
            "txId": self.tx_id,
            "lsn": self.lsn,
            "file": self.file,
            "pos": self.pos,
            "gtid": self.gtid,
            "server_id": self.server_id,
            "thread": self.thread,
            "commit_lsn": self.commit_lsn,
            "seq": self.seq,
        }

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> SourceInfo:
        return cls(
            connector=record["connector"],
            name=record["name"],
            db=record["db"],
            table=TableId(record.get("schema") or "", record.get("table") or ""),
            ts_ms=record["ts_ms"],
            snapshot=record.get("snapshot"),
            tx_id=record.get("txId"),
            lsn=record.get("lsn"),
            file=record.get("file"),
            pos=record.get("pos"),
            gtid=record.get("gtid"),
            server_id=record.get("server_id"),
            thread=record.get("thread"),
            commit_lsn=record.get("commit_lsn"),
            seq=record.get("seq"),
        )


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change of one row (or a truncate of a table), keyed by column name."""

    op: Op
    source: SourceInfo
    before: Row | None = None
    after: Row | None = None
    ts_ms: int | None = None
    unavailable: tuple[str, ...] = field(default=())

    @property
    def table(self) -> TableId:
        return self.source.table

    def key(self, schema: TableSchema) -> Row | None:
        """The primary-key values: of `after`, or of `before` for a delete."""
        row = self.before if self.op == "d" else self.after
        if row is None:
            return None
        return {name: row.get(name) for name in schema.primary_key}


# id(schema) -> (schema, [(column, avro name)], whether every name is its own Avro name);
# the schema is kept in the value so its id cannot be reused while the entry lives.
_NAMES: dict[int, tuple[TableSchema, list[tuple[str, str]], bool]] = {}


def _avro_names(schema: TableSchema) -> tuple[list[tuple[str, str]], bool]:
    entry = _NAMES.get(id(schema))
    if entry is None or entry[0] is not schema:
        pairs = [(c.name, avro_name(c.name)) for c in schema.columns]
        entry = (schema, pairs, all(c == a for c, a in pairs))
        if len(_NAMES) > 4096:  # schemas are few; a bound keeps a long process honest
            _NAMES.clear()
        _NAMES[id(schema)] = entry
    return entry[1], entry[2]


def _to_avro_row(row: Row | None, schema: TableSchema) -> dict[str, Any] | None:
    if row is None:
        return None
    pairs, same = _avro_names(schema)
    if same:
        return row  # the encoder reads the schema's fields by name and ignores the rest
    return {a: row.get(c) for c, a in pairs}


def _from_avro_row(record: dict[str, Any] | None, schema: TableSchema) -> Row | None:
    if record is None:
        return None
    pairs, same = _avro_names(schema)
    if same and len(record) == len(pairs):
        return record  # a decoded record is fresh and holds exactly the schema's fields
    return {c: record.get(a) for c, a in pairs}


# The last source and its record: a snapshot shares one SourceInfo across a whole batch of
# rows. One tuple, swapped whole, so threads never see a half-updated pair.
_LAST_SOURCE: tuple[SourceInfo | None, dict[str, Any]] = (None, {})


def _source_record(source: SourceInfo) -> dict[str, Any]:
    global _LAST_SOURCE
    last, record = _LAST_SOURCE
    if last is not source:
        record = source.to_avro()
        _LAST_SOURCE = (source, record)
    return record


def envelope_record(event: ChangeEvent, schema: TableSchema) -> dict[str, Any]:
    """The Avro value record of `event` for `value_schema(prefix, schema)`."""
    return {
        "before": _to_avro_row(event.before, schema),
        "after": _to_avro_row(event.after, schema),
        "source": _source_record(event.source),
        "op": event.op,
        "ts_ms": event.ts_ms,
        "unavailable": list(event.unavailable) or None,
    }


def key_record(key: Row, schema: TableSchema) -> dict[str, Any]:
    """The Avro key record for `key_schema(prefix, schema)`."""
    return {avro_name(name): key[name] for name in schema.primary_key}


# The decoder hands out the same `source` record while its bytes repeat (a snapshot batch).
_LAST_DECODED: tuple[dict[str, Any] | None, SourceInfo | None] = (None, None)


def _source_info(record: dict[str, Any]) -> SourceInfo:
    global _LAST_DECODED
    last, info = _LAST_DECODED
    if last is not record or info is None:
        info = SourceInfo.from_avro(record)
        _LAST_DECODED = (record, info)
    return info


def event_from_record(record: dict[str, Any], schema: TableSchema) -> ChangeEvent:
    """Rebuild a ChangeEvent from a decoded envelope record."""
    return ChangeEvent(
        op=record["op"],
        source=_source_info(record["source"]),
        before=_from_avro_row(record.get("before"), schema),
        after=_from_avro_row(record.get("after"), schema),
        ts_ms=record.get("ts_ms"),
        unavailable=tuple(record.get("unavailable") or ()),
    )
