"""pgoutput and replication frames decode from bytes built by hand, as the server sends them."""

from __future__ import annotations

import struct

import pytest

from producers.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    DecodeError,
    Delete,
    Insert,
    Keepalive,
    LogicalMessage,
    Relation,
    Truncate,
    Update,
    XLogData,
    decode_message,
    format_lsn,
    parse_copy_frame,
    parse_lsn,
    pg_micros_to_unix_ms,
    standby_status,
)


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def tuple_data(*values: str | object | None) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        else:
            raw = str(v).encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def test_begin_and_commit() -> None:
    begin = decode_message(b"B" + struct.pack(">Qqi", 0x1_0000_0010, 0, 742))
    assert begin == Begin(0x1_0000_0010, pg_micros_to_unix_ms(0), 742)
    assert begin.commit_ts_ms == 946_684_800_000  # 2000-01-01 in unix ms
    commit = decode_message(b"C" + struct.pack(">BQQq", 0, 100, 180, 1_000_000))
    assert commit == Commit(100, 180, 946_684_801_000)


def test_relation_with_key_flags() -> None:
    payload = (
        b"R"
        + struct.pack(">I", 16384)
        + cstr("public")
        + cstr("orders")
        + b"d"
        + struct.pack(">h", 2)
        + b"\x01"
        + cstr("id")
        + struct.pack(">Ii", 20, -1)
        + b"\x00"
        + cstr("total")
        + struct.pack(">Ii", 1700, (12 << 16 | 2) + 4)
    )
    rel = decode_message(payload)
    assert isinstance(rel, Relation)
    assert (rel.namespace, rel.name, rel.replica_identity) == ("public", "orders", "d")
    assert [(c.name, c.type_oid, c.is_key) for c in rel.columns] == [
        ("id", 20, True),
        ("total", 1700, False),
    ]


def test_insert_update_delete_tuples() -> None:
    ins = decode_message(b"I" + struct.pack(">I", 5) + b"N" + tuple_data("1", None, "héllo"))
    assert ins == Insert(5, ("1", None, "héllo"))

    upd = decode_message(
        b"U"
        + struct.pack(">I", 5)
        + b"K"
        + tuple_data("1", None)
        + b"N"
        + tuple_data("2", UNCHANGED)
    )
    assert upd == Update(5, ("1", None), True, ("2", UNCHANGED))

    plain = decode_message(b"U" + struct.pack(">I", 5) + b"N" + tuple_data("3"))
    assert plain == Update(5, None, False, ("3",))

    full = decode_message(b"D" + struct.pack(">I", 5) + b"O" + tuple_data("1", "x"))
    assert full == Delete(5, ("1", "x"), False)


def test_truncate_and_message() -> None:
    trunc = decode_message(b"T" + struct.pack(">iBII", 2, 3, 10, 11))
    assert trunc == Truncate((10, 11), cascade=True, restart_identity=True)
    msg = decode_message(
        b"M" + struct.pack(">BQ", 1, 99) + cstr("hw") + struct.pack(">i", 3) + b"abc"
    )
    assert msg == LogicalMessage(True, 99, "hw", b"abc")


def test_unknown_message_is_an_error() -> None:
    with pytest.raises(DecodeError):
        decode_message(b"Z")
    with pytest.raises(DecodeError):
        decode_message(b"D" + struct.pack(">I", 5) + b"N" + tuple_data("1"))


def test_bad_tuple_data_is_an_error() -> None:
    insert = b"I" + struct.pack(">I", 5) + b"N"
    with pytest.raises(DecodeError, match="unknown tuple value kind 'x'"):
        decode_message(insert + struct.pack(">h", 1) + b"x")
    with pytest.raises(DecodeError, match="past the end"):
        decode_message(insert + struct.pack(">h", 1) + b"t" + struct.pack(">i", 10) + b"abc")
    assert decode_message(insert + tuple_data("é", None, UNCHANGED)) == Insert(
        5, ("é", None, UNCHANGED)
    )


def test_copy_frames() -> None:
    frame = b"w" + struct.pack(">QQq", 10, 20, 0) + b"B..."
    assert parse_copy_frame(frame) == XLogData(10, 20, b"B...")
    assert parse_copy_frame(b"k" + struct.pack(">Qq?", 77, 0, True)) == Keepalive(77, True)
    status = standby_status(0xABC, reply_requested=True)
    tag, write, flush, apply, _clock, reply = struct.unpack(">cQQQq?", status)
    assert (tag, write, flush, apply, reply) == (b"r", 0xABC, 0xABC, 0xABC, True)


def test_lsn_text_round_trip() -> None:
    for text in ("0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"):
        assert format_lsn(parse_lsn(text)) == text
