"""The streaming producer's native fast path (native/src/stream.rs, through
schemas/native_lib.py): a pgoutput row message in, its Kafka key and value out, byte for byte
what ChangeBuilder, `envelope_record` and the compiled codec write, with no Python object per
column or event.

Taken, per message, only for an Insert, an Update without an old tuple or a Delete with a
key-only old tuple of a table the ChangeBuilder knows and the library has a plan for, every
value text or null, inside a transaction whose repeated events (after a reconnect) are all
skipped, while no resume filter is active and no incremental-snapshot window is open on the
table. Anything else, including every value the library would not write the same way, goes
through the Python path (`decode_message`, ChangeBuilder, EventWriter.write), which also
raises the errors a user should see. The ChangeBuilder counts fast-path events as its own
(`count_native_event`), so the reconnect skip stays exact.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import struct
from dataclasses import dataclass

from producers.event_writer import EventWriter
from producers.postgres import native_rows
from producers.postgres.changes import ChangeBuilder
from producers.postgres.incremental import IncrementalSnapshot
from producers.postgres.native_loop import FrameLoop
from schemas import native_lib
from schemas.envelope import ChangeEvent, Op, SourceInfo
from schemas.tables import TableId, TableSchema

log = logging.getLogger(__name__)

_LIB = native_lib.LIB
_HEADER = struct.Struct(">bI")
_ROW_TAGS = frozenset(b"IUD")
_DELETE = ord("d")

# Template values for cutting the envelope, found in it by search: 9-byte varints a name is
# most unlikely to hold. The cut is checked against envelopes of other values, so one that
# did would only leave that table to the Python path.
_CUT_TS = -(2**62) + 12_345
_CUT_XID = 2**62 - 777
_CUT_LSN = -(2**61) - 99
_CUT_COMMIT = 2**61 + 4_242
_CUT_EVENT_TS = -(2**60) - 31


def available() -> bool:
    """Whether the native library is loaded (HEADWATER_NATIVE=0 turns it off)."""
    return _LIB is not None


def _long(value: int) -> bytes:
    """Avro's zigzag varint of a long."""
    n = ((value << 1) ^ (value >> 63)) & 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _source(
    builder: ChangeBuilder, table: TableId, ts: int, xid: int, lsn: int, commit: int
) -> SourceInfo:
    # What ChangeBuilder._source writes for a change inside a transaction.
    return SourceInfo(
        connector="postgresql",
        name=builder.source_name,
        db=builder.db,
        table=table,
        ts_ms=ts,
        snapshot="false",
        tx_id=xid,
        lsn=lsn,
        commit_lsn=commit,
        seq=0,
    )


def cut_segments(value_id: int, envelope: bytes) -> list[bytes] | None:
    """The seven fixed pieces of a streamed change's envelope around its varying values
    (see native/src/stream.rs), from the template envelope `_template` describes; None if
    `envelope` is not laid out that way."""
    start = _HEADER.pack(0, value_id) + b"\x00\x00"  # header, null before, null after
    if not envelope.startswith(start):
        return None
    segments = []
    pos = len(start)
    for marker in (_long(_CUT_TS), _long(_CUT_XID), _long(_CUT_LSN), _long(_CUT_COMMIT)):
        at = envelope.find(marker, pos)
        if at < 0:
            return None
        segments.append(envelope[pos:at])
        pos = at + len(marker)
    op_at = envelope.find(b"\x02c", pos)
    ts = _long(_CUT_EVENT_TS)
    ts_at = envelope.find(ts, op_at + 2)
    if op_at < 0 or ts_at < 0:
        return None
    segments += [envelope[pos:op_at], envelope[op_at + 2 : ts_at], envelope[ts_at + len(ts) :]]
    return segments


def assemble(value_id: int, segments: list[bytes], op: str, source: SourceInfo) -> bytes:
    """The envelope with null before and after that the library writes around `segments`
    (what the cut is checked against)."""
    s = segments
    assert source.tx_id is not None and source.lsn is not None and source.commit_lsn is not None
    return b"".join(
        (
            _HEADER.pack(0, value_id),
            b"\x00\x00",
            s[0],
            _long(source.ts_ms),
            s[1],
            _long(source.tx_id),
            s[2],
            _long(source.lsn),
            s[3],
            _long(source.commit_lsn),
            s[4],
            b"\x02" + op.encode(),
            s[5],
            _long(source.ts_ms),
            s[6],
        )
    )


class StreamEncoder(native_lib.NativePlan):
    """The library's change encoder for one table shape and its schema ids."""

    _new, _free = "hw_stream_plan_new", "hw_stream_plan_free"

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self._out = native_lib.StreamChange()
        self._out_at = ctypes.addressof(self._out)

    def encode(
        self, payload: bytes, ts_ms: int, xid: int, lsn: int, commit_lsn: int
    ) -> tuple[bytes, bytes, bool] | None:
        """(key, value, whether a tombstone follows) of one pgoutput message, or None when
        Python must take it."""
        assert _LIB is not None
        if _LIB.hw_stream_encode(
            self._handle, payload, len(payload), ts_ms, xid, lsn, commit_lsn, self._out_at
        ):
            return None
        out = self._out
        data = ctypes.string_at(out.buf_ptr, out.total_len)
        split = out.key_len
        return data[:split], data[split:], out.op == _DELETE


@dataclass(slots=True)
class _Table:
    schema: TableSchema  # the ChangeBuilder's, by identity
    codec: object  # the writer's codec the plan was made for, by identity
    topic: str
    encoder: StreamEncoder | None


class NativeStream:
    """Writes the row messages it can; `write` answers False for the others."""

    def __init__(self, writer: EventWriter, incremental: IncrementalSnapshot) -> None:
        self.writer = writer
        self.incremental = incremental
        self._tables: dict[TableId, _Table] = {}
        self.written = 0
        self.loop: FrameLoop | None = None

    def attach(self, loop: FrameLoop) -> None:
        """Register with `loop` each table this path writes a row of (see native_loop)."""
        self.loop = loop

    def write(self, builder: ChangeBuilder, payload: bytes, lsn: int) -> bool:
        """Encode and produce the message at `lsn` when the fast path may; True if it did."""
        if payload[0] not in _ROW_TAGS:
            return False
        tx = builder.tx
        if tx is None or tx.seen < tx.skip or self.writer.resume is not None:
            return False
        oid = int.from_bytes(payload[1:5], "big")
        schema = builder.relations.get(oid)
        if schema is None:
            return False  # not (yet) known to the builder: it decides
        chunk = self.incremental.chunk
        if chunk is not None and chunk.window_open and chunk.schema.table == schema.table:
            return False  # the event's key must leave the chunk: on_change does that
        table = self._tables.get(schema.table)
        if (
            table is None
            or table.schema is not schema
            or table.codec is not self.writer.codec(schema.table)
        ):
            table = self._plan(builder, schema)
        if table.encoder is None:
            return False
        encoded = table.encoder.encode(payload, tx.commit_ts_ms, tx.xid, lsn, tx.final_lsn)
        if encoded is None:
            return False
        builder.count_native_event()
        key, value, tombstone = encoded
        self.writer.write_change(table.topic, key, value, tombstone)
        self.written += 1
        loop = self.loop
        if loop is not None and not loop.registered(oid):
            loop.register(oid, table.encoder.handle, table.topic)
        return True

    def _plan(self, builder: ChangeBuilder, schema: TableSchema) -> _Table:
        codec = self.writer.codec(schema.table)
        table = _Table(schema, codec, "", None)
        if self.loop is not None:
            self.loop.clear()  # it may hold the plan this table replaces
        self._tables[schema.table] = table
        # The Python path parses with the builder's schema and encodes with the writer's:
        # the library does both with one, so they must be the same.
        if codec is None or codec.schema != schema or not schema.primary_key:
            return table
        spec = native_rows.encoder_spec(schema)
        segments = self._segments(builder, schema)
        if spec is None or segments is None:
            log.info("%s: streamed changes go through the Python path", schema.table)
            return table
        lines = [spec, *(f"seg {s.hex()}" for s in segments)]
        try:
            table.encoder = StreamEncoder("\n".join(lines))
        except ValueError as exc:
            log.warning("%s: no native stream encoder (%s)", schema.table, exc)
            return table
        table.topic = codec.topic
        return table

    def _segments(self, builder: ChangeBuilder, schema: TableSchema) -> list[bytes] | None:
        """Key header, value header, and the envelope's fixed pieces cut from an envelope
        the writer's codec encoded, checked against envelopes of other values and ops."""
        _, key_id, value_id = self.writer.table_ids(schema.table)
        source = _source(builder, schema.table, _CUT_TS, _CUT_XID, _CUT_LSN, _CUT_COMMIT)
        template = self.writer.envelope(ChangeEvent("c", source, None, None, _CUT_EVENT_TS))
        pieces = cut_segments(value_id, template)
        if pieces is None:
            return None
        samples = [(1_700_000_000_123, 4_321, 0x16B374D48, 0x16B374E00), (0, 0, 0, 0)]
        samples.append((2**40 + 5, 2**32 - 1, 2**62, 2**62 + 8))
        ops: tuple[Op, ...] = ("c", "u", "d")
        for (ts, xid, lsn, commit), op in itertools.product(samples, ops):
            source = _source(builder, schema.table, ts, xid, lsn, commit)
            expected = self.writer.envelope(ChangeEvent(op, source, None, None, ts))
            if assemble(value_id, pieces, op, source) != expected:
                return None
        return [_HEADER.pack(0, key_id), _HEADER.pack(0, value_id), *pieces]
