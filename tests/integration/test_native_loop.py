"""The streaming producer's native frame loop (native/src/frames.rs,
producers/postgres/native_loop.py) against the Python path it stands in for, on a real
PostgreSQL: two slots of one publication get the same stream; one is read by the frame loop
(the frames it leaves going through NativeStream and ChangeBuilder, as the producer does),
the other frame by frame in Python alone. The Kafka records handed to the client and how far
events were handed out must be the same, for random transactions over a keyed table (with
values stored out of line, so some updates carry unchanged TOAST values), a REPLICA IDENTITY
FULL table, a table the task does not select, key changes, truncates and transactions
larger than one call of the loop; also the skip of a transaction repeated after a reconnect.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from headwater.config import TaskConfig
from producers.postgres import catalog, native_loop, native_stream
from producers.postgres.changes import ChangeBuilder, HandedOut
from producers.postgres.connection import connect
from producers.postgres.incremental import IncrementalSnapshot
from producers.postgres.pgoutput import (
    Keepalive,
    LogicalMessage,
    Relation,
    XLogData,
    decode_message,
    parse_copy_frame,
)
from producers.postgres.replication import ReplicationStream
from schemas.registry import SchemaRegistry
from schemas.tables import TableId, TableSchema
from tests.integration.test_native_stream import RecordingWriter

pytestmark = pytest.mark.integration

if not native_loop.available():
    if os.environ.get("CI"):
        raise RuntimeError("the native library is not built: `make install` builds it")
    pytest.skip("the native frame loop is not available", allow_module_level=True)

KEYED = TableId("public", "loop_rows")
FULL = TableId("public", "loop_full")
END = "test-end"


@dataclass
class Reader:
    """One slot's stream, its builder and writer; with `frames`, read as the producer does."""

    stream: ReplicationStream
    builder: ChangeBuilder
    writer: RecordingWriter
    frames: native_loop.FrameLoop | None = None
    fast: native_stream.NativeStream | None = None
    calls: list[int] = field(default_factory=list)  # statuses of the loop's runs

    def read_until_end(self, timeout: float = 30.0) -> None:
        """Everything up to the logical message END."""
        for _ in range(100_000):
            if self.frames is not None and self._loop_may_run():
                frame = self._run_loop()
            else:
                if self.frames is not None and self.frames.owned:
                    self.frames.give(self.builder)
                frame = self.stream.read(timeout)
                assert frame is not None, f"no replication frame within {timeout} s"
            if frame is not None and self._take(frame):
                return
        raise AssertionError("END never came")

    def _loop_may_run(self) -> bool:
        tx = self.builder.tx
        assert self.frames is not None
        return self.frames.owned or tx is None or tx.seen >= tx.skip

    def _run_loop(self) -> XLogData | Keepalive | None:
        frames = self.frames
        assert frames is not None
        if not frames.owned:
            frames.take(self.builder)
        status = frames.run(False, 1.0, 0.001)
        self.calls.append(status)
        for topic, key, value, tombstone in frames.records():
            self.writer.write_change(topic, key, value, tombstone)
        assert status not in (native_loop.ENDED, native_loop.BROKEN)
        if status == native_loop.REPLY:
            self.stream.send_status(0)
        if status != native_loop.FRAME:
            return None
        frames.give(self.builder)
        return parse_copy_frame(frames.frame())

    def _take(self, frame: XLogData | Keepalive) -> bool:
        """One frame on the Python path; True at END."""
        if isinstance(frame, Keepalive):
            if frame.reply_requested:
                self.stream.send_status(0)
            return False
        if self.fast is not None and self.fast.write(self.builder, frame.payload, frame.wal_start):
            return False
        msg = decode_message(frame.payload)
        codecs = self.writer.codec_changes
        ended = isinstance(msg, LogicalMessage) and msg.prefix == END
        for event in self.builder.on_message(msg, frame.wal_start):
            self.writer.write(event)
        if self.frames is not None:
            changed = self.writer.codec_changes != codecs
            native_loop.after_python_message(self.frames, msg, self.builder, changed)
        return ended


@dataclass
class Env:
    conn: psycopg.Connection[Any]
    make_reader: Callable[..., Reader]
    pair: list[Reader] = field(default_factory=list)  # kept over a property test's examples


@pytest.fixture
def env(make_task: Callable[..., TaskConfig]) -> Iterator[Env]:
    task = make_task()
    conn = connect(task.source.url)
    conn.autocommit = True
    conn.execute(
        "CREATE TABLE loop_rows (id int, k text, v bigint, note text, PRIMARY KEY (id, k))"
    )
    conn.execute("ALTER TABLE loop_rows ALTER COLUMN note SET STORAGE EXTERNAL")
    conn.execute("CREATE TABLE loop_full (id int PRIMARY KEY, note text)")
    conn.execute("ALTER TABLE loop_full REPLICA IDENTITY FULL")
    conn.execute("CREATE TABLE loop_other (id int PRIMARY KEY, note text)")
    publication = f"p_{uuid.uuid4().hex[:8]}"
    conn.execute(
        sql.SQL("CREATE PUBLICATION {} FOR TABLE loop_rows, loop_full, loop_other").format(
            sql.Identifier(publication)
        )
    )
    registry = SchemaRegistry(task.registry.url)
    types = catalog.TypeResolver(conn)
    closing: list[Callable[[], None]] = []

    def make_reader(
        native: bool, handed_out: HandedOut = (0, 0), max_records: int = 1000
    ) -> Reader:
        writer = RecordingWriter(task, registry)

        def describe(rel: Relation) -> TableSchema:
            schema = catalog.schema_from_relation(conn, rel, types)
            writer.register_table(schema)
            return schema

        builder = ChangeBuilder(task.topic_prefix, "db", {KEYED, FULL}, describe, handed_out)
        stream = ReplicationStream(connect(task.source.url, replication=True))
        slot = f"s_{uuid.uuid4().hex[:8]}"
        stream.create_slot(slot, export_snapshot=False)
        stream.start(slot, publication)
        closing.extend([writer.close, stream.conn.close, stream.stop])
        reader = Reader(stream, builder, writer)
        if native:
            reader.fast = native_stream.NativeStream(
                writer, IncrementalSnapshot(task.name, task.topic_prefix, "db")
            )
            reader.frames = native_loop.FrameLoop(stream.pgconn, max_records)
            reader.fast.attach(reader.frames)
        return reader

    try:
        yield Env(conn, make_reader)
    finally:
        for close in reversed(closing):
            close()
        registry.close()
        conn.close()


def end_mark(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pg_logical_emit_message(true, %s, 'x')", (END,))


# One statement: (kind, id, k, v, note length); notes long enough go out of line.
statements = st.tuples(
    st.sampled_from(["insert", "update_v", "update_note", "update_key", "delete", "full", "other"]),
    st.integers(0, 6),
    st.sampled_from(["a", "b", "é", "\t\\"]),
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    st.sampled_from([0, 3, 3000]),
)
transactions = st.lists(st.lists(statements, min_size=1, max_size=6), min_size=1, max_size=8)


def apply(conn: psycopg.Connection[Any], transaction: list[tuple[str, int, str, Any, int]]) -> None:
    with conn.transaction():
        for kind, id_, k, v, size in transaction:
            note = ("n" * size) if size else None
            if kind == "insert":
                conn.execute(
                    "INSERT INTO loop_rows VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (id_, k, v, note),
                )
            elif kind == "update_v":
                conn.execute("UPDATE loop_rows SET v = %s WHERE id = %s", (v, id_))
            elif kind == "update_note":
                conn.execute("UPDATE loop_rows SET note = %s WHERE id = %s", (note, id_))
            elif kind == "update_key":
                conn.execute(
                    "UPDATE loop_rows SET id = id + 100 WHERE id = %s "
                    "AND NOT EXISTS (SELECT 1 FROM loop_rows WHERE id = %s + 100)",
                    (id_, id_),
                )
            elif kind == "delete":
                conn.execute("DELETE FROM loop_rows WHERE id = %s", (id_,))
            elif kind == "full":
                conn.execute(
                    "INSERT INTO loop_full VALUES (%s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET note = excluded.note",
                    (id_, note),
                )
            else:
                conn.execute(
                    "INSERT INTO loop_other VALUES (%s, %s) ON CONFLICT DO NOTHING", (id_, note)
                )


@settings(
    max_examples=int(os.environ.get("HEADWATER_NATIVE_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=transactions, truncate=st.booleans())
def test_frame_loop_writes_what_the_python_path_writes(
    env: Env, batch: list[list[tuple[str, int, str, Any, int]]], truncate: bool
) -> None:
    # One slot each for the whole test: the examples follow each other in their streams.
    if not env.pair:
        env.pair += [env.make_reader(True, (0, 0)), env.make_reader(False, (0, 0))]
    loop, python = env.pair
    for transaction in batch:
        apply(env.conn, transaction)
    if truncate:
        env.conn.execute("TRUNCATE loop_rows, loop_full")
    end_mark(env.conn)
    python.read_until_end()
    loop.read_until_end()
    assert loop.writer.sent == python.writer.sent
    assert loop.builder.handed_out == python.builder.handed_out
    env.conn.execute("DELETE FROM loop_rows")  # streamed into the next example
    env.conn.execute("DELETE FROM loop_full")
    env.conn.execute("DELETE FROM loop_other")


def test_a_transaction_larger_than_a_call_and_the_tables_it_learns(env: Env) -> None:
    loop, python = env.make_reader(True, (0, 0), 50), env.make_reader(False, (0, 0))
    env.conn.execute("INSERT INTO loop_rows SELECT g, 'k', g, NULL FROM generate_series(1, 2500) g")
    env.conn.execute("UPDATE loop_rows SET v = v + 1")
    env.conn.execute("DELETE FROM loop_rows WHERE id % 2 = 0")
    end_mark(env.conn)
    python.read_until_end()
    loop.read_until_end()
    assert len(python.writer.sent) == 2500 + 2500 + 2 * 1250  # deletes: event and tombstone
    assert loop.writer.sent == python.writer.sent
    assert loop.builder.handed_out == python.builder.handed_out
    # The loop wrote all but the first (NativeStream's, which registered the table with the
    # loop), a delete and its tombstone one record; calls ended with 50 records ready.
    assert loop.frames is not None and loop.fast is not None
    assert loop.frames.written == 2500 + 2500 + 1250 - 1 and loop.fast.written == 1
    assert native_loop.FULL in loop.calls


def test_a_transaction_sent_again_after_a_reconnect_skips_what_was_handed_out(env: Env) -> None:
    loop, python, probe = (env.make_reader(native, (0, 0)) for native in (True, False, False))
    env.conn.execute("INSERT INTO loop_rows SELECT g, 'k', g, NULL FROM generate_series(1, 5) g")
    end_mark(env.conn)
    probe.read_until_end()
    # Another builder had handed out 3 of that transaction's 5 events before its connection
    # dropped: both paths skip those (Python) and write the last two: the first through
    # NativeStream, which registers the table with the loop, the last by the loop. The END
    # message clears the loop's tables, so the next transaction's row registers it again.
    handed: HandedOut = (probe.builder.handed_out[0], 3)
    loop.builder.handed_out = python.builder.handed_out = handed
    env.conn.execute("INSERT INTO loop_rows VALUES (6, 'k', 6, NULL)")
    end_mark(env.conn)
    for reader in (python, python, loop, loop):  # up to each END mark
        reader.read_until_end()
    assert len(python.writer.sent) == 3
    assert loop.writer.sent == python.writer.sent
    assert loop.builder.handed_out == python.builder.handed_out
    assert loop.frames is not None and loop.fast is not None
    assert (loop.fast.written, loop.frames.written) == (2, 1)


def test_rows_of_a_table_outside_the_task_pass_without_python(env: Env) -> None:
    loop, python = env.make_reader(True, (0, 0)), env.make_reader(False, (0, 0))
    env.conn.execute("INSERT INTO loop_other SELECT g, 'x' FROM generate_series(1, 500) g")
    env.conn.execute("INSERT INTO loop_rows VALUES (1, 'k', 1, NULL)")
    end_mark(env.conn)
    python.read_until_end()
    loop.read_until_end()
    assert len(python.writer.sent) == 1
    assert loop.writer.sent == python.writer.sent
    assert loop.builder.handed_out == python.builder.handed_out
    # Python saw the Relation messages, the first row of each table and the END mark; the
    # loop passed over the other 499 rows of the table outside the task.
    assert loop.calls.count(native_loop.FRAME) < 10
