"""Decoding of the logical replication stream, as pure functions over bytes.

Two layers: the CopyBoth frames of the replication protocol (`w` XLogData, `k` primary
keepalive, and the `r` standby status update we send back) and the pgoutput protocol
version 1 messages inside XLogData (Begin, Commit, Relation, Insert, Update, Delete,
Truncate, Type, Origin, Message). No I/O here, so every case tests without a server.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_UNIX_TO_PG_US = 946_684_800_000_000

_U8 = struct.Struct(">B")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_XLOG = struct.Struct(">QQq")
_KEEPALIVE = struct.Struct(">Qq?")
_STATUS = struct.Struct(">cQQQq?")
_BEGIN = struct.Struct(">QqI")  # final LSN, commit time, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit LSN, end LSN, commit time


class DecodeError(ValueError):
    """A replication message that does not follow the protocol."""


def pg_micros_to_unix_ms(pg_micros: int) -> int:
    """PostgreSQL timestamps count microseconds from 2000-01-01; Kafka wants unix ms."""
    return (pg_micros + _UNIX_TO_PG_US) // 1000


def now_pg_micros() -> int:
    return int((datetime.now(UTC) - PG_EPOCH) / timedelta(microseconds=1))


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


# --- replication protocol frames ------------------------------------------------------------


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x, per frame
class XLogData:
    wal_start: int
    wal_end: int
    payload: bytes


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x, per frame
class Keepalive:
    wal_end: int
    reply_requested: bool


def parse_copy_frame(frame: bytes) -> XLogData | Keepalive:
    """One CopyData message of START_REPLICATION."""
    kind = frame[:1]
    if kind == b"w":
        start, end, _clock = _XLOG.unpack_from(frame, 1)
        return XLogData(start, end, frame[1 + _XLOG.size :])
    if kind == b"k":
        end, _clock, reply = _KEEPALIVE.unpack_from(frame, 1)
        return Keepalive(end, reply)
    raise DecodeError(f"unknown replication frame {kind!r}")


def standby_status(lsn: int, reply_requested: bool = False) -> bytes:
    """A standby status update reporting `lsn` as written, flushed and applied."""
    return _STATUS.pack(b"r", lsn, lsn, lsn, now_pg_micros(), reply_requested)


# --- pgoutput messages ----------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x, per frame
class Begin:
    final_lsn: int
    commit_ts_ms: int
    xid: int


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x, per frame
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_ts_ms: int


@dataclass(frozen=True, slots=True)
class RelationColumn:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]


class Unchanged:
    """Marks an unchanged TOASTed value that the server did not send."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()

TupleValue = str | None | Unchanged


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    old: tuple[TupleValue, ...] | None  # key columns ('K') or whole row ('O'), if sent
    old_is_key_only: bool
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: tuple[TupleValue, ...]
    old_is_key_only: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message we read past (Origin, Type)."""

    tag: str


PgOutputMessage = (
    Begin | Commit | Relation | Insert | Update | Delete | Truncate | LogicalMessage | Ignored
)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def u8(self) -> int:
        (v,) = _U8.unpack_from(self.buf, self.pos)
        self.pos += 1
        return int(v)

    def byte(self) -> str:
        return chr(self.u8())

    def i16(self) -> int:
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def i32(self) -> int:
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u32(self) -> int:
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u64(self) -> int:
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def i64(self) -> int:
        (v,) = _I64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def string(self) -> str:
        end = self.buf.index(b"\0", self.pos)
        text = self.buf[self.pos : end].decode()
        self.pos = end + 1
        return text

    def raw(self, n: int) -> bytes:
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(chunk)

    def tuple_data(self) -> tuple[TupleValue, ...]:
        # The hot path of streaming (every column of every change): local variables and
        # direct indexing instead of a method call per byte.
        buf, pos = self.buf, self.pos
        (count,) = _I16.unpack_from(buf, pos)
        pos += 2
        values: list[TupleValue] = []
        append = values.append
        for _ in range(count):
            kind = buf[pos]
            pos += 1
            if kind == 0x74 or kind == 0x62:  # 't' text, 'b' binary
                (size,) = _I32.unpack_from(buf, pos)
                pos += 4
                if pos + size > len(buf):
                    raise DecodeError("tuple value runs past the end of the message")
                append(str(buf[pos : pos + size], "utf-8"))
                pos += size
            elif kind == 0x6E:  # 'n' null
                append(None)
            elif kind == 0x75:  # 'u' unchanged TOAST value
                append(UNCHANGED)
            else:
                raise DecodeError(f"unknown tuple value kind {chr(kind)!r}")
        self.pos = pos
        return tuple(values)


def _relation(r: _Reader) -> Relation:
    oid, namespace, name = r.u32(), r.string(), r.string()
    identity = r.byte()
    columns = []
    for _ in range(r.i16()):
        flags = r.u8()
        columns.append(RelationColumn(r.string(), r.u32(), r.i32(), bool(flags & 1)))
    return Relation(oid, namespace, name, identity, tuple(columns))


def _update(r: _Reader) -> Update:
    oid = r.u32()
    kind = r.byte()
    old = None
    key_only = False
    if kind in ("K", "O"):
        key_only = kind == "K"
        old = r.tuple_data()
        kind = r.byte()
    if kind != "N":
        raise DecodeError(f"update without a new tuple (got {kind!r})")
    return Update(oid, old, key_only, r.tuple_data())


def _delete(r: _Reader) -> Delete:
    oid = r.u32()
    kind = r.byte()
    if kind not in ("K", "O"):
        raise DecodeError(f"delete without an old tuple (got {kind!r})")
    return Delete(oid, r.tuple_data(), kind == "K")


def _truncate(r: _Reader) -> Truncate:
    count, options = r.i32(), r.u8()
    oids = tuple(r.u32() for _ in range(count))
    return Truncate(oids, bool(options & 1), bool(options & 2))


def _insert(r: _Reader) -> Insert:
    oid = r.u32()
    if r.byte() != "N":
        raise DecodeError("insert without a new tuple")
    return Insert(oid, r.tuple_data())


def _message(r: _Reader) -> LogicalMessage:
    flags, lsn, prefix = r.u8(), r.u64(), r.string()
    return LogicalMessage(bool(flags & 1), lsn, prefix, r.raw(r.i32()))


def decode_message(payload: bytes) -> PgOutputMessage:
    """Decode one pgoutput (protocol version 1) message."""
    # Begin and Commit frame every transaction (most of what the Python path decodes once
    # the native path takes the row changes): one struct call each, no reader.
    first = payload[:1]
    if first == b"B":
        final_lsn, ts, xid = _BEGIN.unpack_from(payload, 1)
        return Begin(final_lsn, pg_micros_to_unix_ms(ts), xid)
    if first == b"C":
        _flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(payload, 1)
        return Commit(commit_lsn, end_lsn, pg_micros_to_unix_ms(ts))
    r = _Reader(payload)
    tag = r.byte()
    if tag == "R":
        return _relation(r)
    if tag == "I":
        return _insert(r)
    if tag == "U":
        return _update(r)
    if tag == "D":
        return _delete(r)
    if tag == "T":
        return _truncate(r)
    if tag == "M":
        return _message(r)
    if tag in ("O", "Y"):
        return Ignored(tag)
    raise DecodeError(f"unknown pgoutput message {tag!r}")
