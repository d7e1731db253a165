"""The streaming producer's native frame loop (native/src/frames.rs): the library reads the
replication connection's frames through libpq itself and handles Begin, Commit and the row
messages of the tables registered with it, handing back encoded Kafka records to produce and
the first frame it leaves to Python.

Tables are registered by NativeStream once its per-message path has written a row of theirs
(so the same checks decided the plan), and forgotten whenever a frame Python handles may have
changed a relation, a codec or a plan. The transaction state goes both ways through
`ChangeBuilder.native_state` / `adopt_native_state`, so either side can take the next frame.

Needs the address of the connection's libpq functions: found among the libraries loaded in
this process (psycopg's own libpq for the binary and C implementations, the ctypes one for
the pure-Python one). Without them the producer reads frames in Python, as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from producers.postgres.changes import ChangeBuilder
from producers.postgres.pgoutput import (
    Delete,
    Insert,
    LogicalMessage,
    PgOutputMessage,
    Relation,
    Update,
)
from schemas import native_lib

log = logging.getLogger(__name__)

_LIB = native_lib.LIB
_RECORD = struct.Struct("<IBII")  # topic number, tombstone, key length, value length

# Messages taken on the Python path after which the loop's tables are forgotten: a Relation
# message (a table's shape, name or selection changed) and a logical message (a watermark,
# or a rename the catalog poll noticed).
_CHANGES_PLANS = (Relation, LogicalMessage)
_ROWS = (Insert, Update, Delete)


def after_python_message(
    loop: FrameLoop, msg: PgOutputMessage, builder: ChangeBuilder, codec_changed: bool
) -> None:
    """What the loop must forget or learn once the Python path took `msg`: every table
    after a message that may change a relation or a plan, or when the writer registered a
    schema meanwhile (`codec_changed`); a row of a table outside the task (no event) lets
    the loop pass over that table's next rows."""
    if codec_changed or isinstance(msg, _CHANGES_PLANS):
        loop.clear()
    elif isinstance(msg, _ROWS) and msg.relation_oid not in builder.relations:
        loop.ignore(msg.relation_oid)


NEED_INPUT, FRAME, FULL, COMMITTED, ENDED, BROKEN, REPLY = range(7)

# One call hands back at most this much: Python produces it before reading on, so a burst
# never delays the first record by more than a few milliseconds.
_MAX_RECORDS = 1_000
_MAX_BYTES = 1 << 20


def _libpq() -> ctypes.CDLL | None:
    """The libpq psycopg's connections use, or None when it cannot be told."""
    impl = psycopg.pq.__impl__
    if impl == "python":
        from psycopg.pq import _pq_ctypes

        return _pq_ctypes.pq  # type: ignore[attr-defined,no-any-return]
    mapped: set[str] = set()
    try:
        with open(f"/proc/{os.getpid()}/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if Path(path).name.startswith("libpq.so") or Path(path).name.startswith("libpq-"):
                    mapped.add(path)
    except OSError:
        return None
    if impl == "binary":
        # The wheel's own copy; a system libpq loaded beside it serves other connections.
        mapped = {p for p in mapped if "psycopg_binary" in p}
    if len(mapped) != 1:
        return None
    try:
        return ctypes.CDLL(mapped.pop())
    except OSError:
        return None


# HEADWATER_FRAME_LOOP=0 reads the frames in Python (for comparisons).
_WANTED = os.environ.get("HEADWATER_FRAME_LOOP", "1") != "0"
_BUILT = _LIB is not None and not any(n.startswith("hw_loop_") for n in native_lib.MISSING)
_PQ = _libpq() if _BUILT and _WANTED else None


def available() -> bool:
    """Whether the frame loop can run (the native library and libpq's functions found)."""
    return _LIB is not None and _PQ is not None


def open_loop(pgconn: Any) -> FrameLoop | None:
    """The frame loop over `pgconn`, or None (frames then read in Python) when the library,
    libpq's functions or the connection's pointer are not to be had."""
    if not available():
        if _BUILT and _WANTED:
            log.info("no libpq of psycopg's found in this process: frames are read in Python")
        return None
    try:
        return FrameLoop(pgconn)
    except (AttributeError, RuntimeError) as exc:  # a psycopg without pgconn_ptr, say
        log.warning("native frame loop not used (%s); frames are read in Python", exc)
        return None


class FrameLoop:
    """One replication connection's frame loop.

    While it runs, the open transaction and the hand-out position are the library's: `give`
    puts them into the ChangeBuilder before Python takes a frame, `take` back before the loop
    runs again (`owned` says which side has them)."""

    def __init__(self, pgconn: Any, max_records: int = _MAX_RECORDS) -> None:
        assert _LIB is not None and _PQ is not None
        self._pgconn = pgconn  # the loop holds its PGconn pointer: keep it alive
        functions = [
            ctypes.cast(f, ctypes.c_void_p).value
            for f in (_PQ.PQgetCopyData, _PQ.PQfreemem, _PQ.PQconsumeInput)
        ]
        handle = _LIB.hw_loop_new(
            pgconn.pgconn_ptr, *functions, pgconn.socket, max_records, _MAX_BYTES
        )
        if not handle:
            raise RuntimeError("the native library refused the frame loop")
        self._handle: int = handle
        self._state = native_lib.LoopState()
        self._state_at = ctypes.addressof(self._state)
        self._topics: list[str] = []
        self._topic_numbers: dict[str, int] = {}
        self._registered: set[int] = set()
        self.owned = False
        self.written = 0  # records handed out, over the loop's life

    def __del__(self) -> None:
        if _LIB is not None and getattr(self, "_handle", None):
            _LIB.hw_loop_free(self._handle)
            self._handle = 0

    def register(self, oid: int, plan: int, topic: str) -> None:
        """Let the loop encode relation `oid`'s rows with `plan` (a StreamEncoder's handle,
        alive until the next `clear`)."""
        assert _LIB is not None
        number = self._topic_numbers.get(topic)
        if number is None:
            number = self._topic_numbers[topic] = len(self._topics)
            self._topics.append(topic)
        _LIB.hw_loop_register(self._handle, oid, plan, number)
        self._registered.add(oid)

    def ignore(self, oid: int) -> None:
        """Let the loop pass over relation `oid`'s rows: a table outside the task that shares
        the publication (its rows make no event), until the next `clear`."""
        assert _LIB is not None
        _LIB.hw_loop_register(self._handle, oid, None, 0)
        self._registered.add(oid)

    def registered(self, oid: int) -> bool:
        return oid in self._registered

    def clear(self) -> None:
        """Forget every table: a relation, a codec or a plan may have changed."""
        assert _LIB is not None
        if self._registered:
            _LIB.hw_loop_clear(self._handle)
            self._registered.clear()

    def take(self, builder: ChangeBuilder) -> None:
        """Take the builder's transaction state (it must have no repeated event to skip)."""
        st = self._state
        tx, (st.handed_lsn, st.handed_count) = builder.native_state()
        if tx is None:
            st.in_tx = 0
        else:
            st.in_tx = 1
            st.xid, st.ts_ms, st.final_lsn, st.seen = tx
        self.owned = True

    def give(self, builder: ChangeBuilder) -> None:
        """Hand the transaction state to the builder."""
        st = self._state
        tx = (st.xid, st.ts_ms, st.final_lsn, st.seen) if st.in_tx else None
        builder.adopt_native_state(tx, (st.handed_lsn, st.handed_count))
        self.owned = False

    def run(self, stop_at_commit: bool, timeout_s: float, gather_s: float) -> int:
        """Read, wait and handle frames (see frames.rs); returns why it stopped."""
        assert _LIB is not None and self.owned
        self._state.stop_at_commit = stop_at_commit
        return int(
            _LIB.hw_loop_run(
                self._handle, self._state_at, int(timeout_s * 1e6), int(gather_s * 1e6)
            )
        )

    @property
    def state(self) -> native_lib.LoopState:
        """What the latest run left: `in_tx`, `committed` (the last commit's end LSN, 0:
        none), `wal_start`, `server_end` (of keepalives, 0: none), `records`."""
        return self._state

    def frame(self) -> bytes:
        """The frame the latest run left to Python (status FRAME)."""
        st = self._state
        return ctypes.string_at(st.frame_ptr, st.frame_len)

    def records(self) -> Iterator[tuple[str, bytes, bytes, bool]]:
        """The latest run's records: (topic, key, value, tombstone after it)."""
        st = self._state
        count = st.records
        if not count:
            return
        data = ctypes.string_at(st.out_ptr, st.out_len)
        topics = self._topics
        unpack = _RECORD.unpack_from
        at = 0
        self.written += count
        for _ in range(count):
            topic, tombstone, key_len, value_len = unpack(data, at)
            at += 13
            key_end = at + key_len
            end = key_end + value_len
            yield topics[topic], data[at:key_end], data[key_end:end], bool(tombstone)
            at = end
