"""The streaming producer's native fast path (native/src/stream.rs,
producers/postgres/native_stream.py) against the Python path it stands in for: random rows
of every type the encoder plans are inserted, updated and deleted on a real PostgreSQL, read
through a real slot with pgoutput over the replication protocol, and each message is taken
both ways (the fast path where it goes, ChangeBuilder + EventWriter.write otherwise; and
ChangeBuilder + EventWriter.write alone): the Kafka messages handed to the client must be the
same bytes, topic and partition choice, message for message. Also the messages it must leave
to Python (a key change, an unchanged TOAST value, REPLICA IDENTITY FULL), the reconnect
skip and the incremental-snapshot window."""

from __future__ import annotations

import os
import random
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
from producers.event_writer import EventWriter
from producers.postgres import catalog, native_stream
from producers.postgres.changes import ChangeBuilder, HandedOut
from producers.postgres.connection import connect
from producers.postgres.incremental import Chunk, IncrementalSnapshot
from producers.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    Keepalive,
    PgOutputMessage,
    Relation,
    Update,
    XLogData,
    decode_message,
)
from producers.postgres.replication import ReplicationStream
from schemas.registry import SchemaRegistry
from schemas.tables import Column, TableId, TableSchema
from tests.integration.test_native_rows import TABLE as ROWS_TABLE
from tests.integration.test_native_rows import nullable, row_values, texts

pytestmark = pytest.mark.integration

if not native_stream.available():
    if os.environ.get("CI"):
        raise RuntimeError("the native library is not built: `make install` builds it")
    pytest.skip("the native library is not built (cargo missing)", allow_module_level=True)

# Every column of the full load's test table, and a text column stored out of line, so an
# update that leaves it alone sends it as an unchanged TOAST value.
COLUMNS = (*ROWS_TABLE.columns, Column("note", "text", "text"))
NAMES = tuple(c.name for c in COLUMNS)
TABLE = TableId("public", "native_stream")
FULL = TableId("public", "full_rows")
Sent = tuple[str, bytes | None, bytes | None, int | None]


class RecordingWriter(EventWriter):
    """A real EventWriter (schemas registered, topics created) that records what it hands
    to the Kafka client instead of sending it: what both paths must agree on."""

    def __init__(self, task: TaskConfig, registry: SchemaRegistry) -> None:
        super().__init__(task, registry)
        self.sent: list[Sent] = []

    def _produce(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        self.sent.append((topic, key, value, partition))
        self.produced += 1

    def write_change(self, topic: str, key: bytes, value: bytes, tombstone: bool) -> None:
        self._produce(topic, key, value)  # no partition: the client's murmur2, as write
        if tombstone:
            self._produce(topic, key, None)


@dataclass
class Path:
    """One way through the stream: a builder and its writer (and the fast path, or not)."""

    builder: ChangeBuilder
    writer: RecordingWriter
    fast: native_stream.NativeStream | None = None
    taken: list[bool] = field(default_factory=list)

    def take(self, payload: bytes, lsn: int) -> None:
        if self.fast is not None and self.fast.write(self.builder, payload, lsn):
            self.taken.append(True)
            return
        self.taken.append(False)
        for event in self.builder.on_message(decode_message(payload), lsn):
            if self.fast is not None:
                self.fast.incremental.on_change(event)
            self.writer.write(event)


@dataclass
class Env:
    task: TaskConfig
    conn: psycopg.Connection[Any]
    stream: ReplicationStream
    make_path: Callable[[bool, HandedOut], Path]
    incremental: IncrementalSnapshot
    paths: list[Path] = field(default_factory=list)


@pytest.fixture
def env(make_task: Callable[..., TaskConfig]) -> Iterator[Env]:
    task = make_task()
    conn = connect(task.source.url)
    conn.autocommit = True
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in COLUMNS
    )
    conn.execute(sql.SQL("CREATE TABLE native_stream ({}, PRIMARY KEY (id, k))").format(columns))
    conn.execute("ALTER TABLE native_stream ALTER COLUMN note SET STORAGE EXTERNAL")
    conn.execute("CREATE TABLE full_rows (id int PRIMARY KEY, note text)")
    conn.execute("ALTER TABLE full_rows REPLICA IDENTITY FULL")
    conn.execute("CREATE TEMP TABLE stage (LIKE native_stream)")
    publication = f"p_{uuid.uuid4().hex[:8]}"
    conn.execute(
        sql.SQL("CREATE PUBLICATION {} FOR TABLE native_stream, full_rows").format(
            sql.Identifier(publication)
        )
    )
    registry = SchemaRegistry(task.registry.url)
    types = catalog.TypeResolver(conn)
    writers: list[RecordingWriter] = []
    incremental = IncrementalSnapshot(task.name, task.topic_prefix, "db")

    def make_path(fast: bool, handed_out: HandedOut = (0, 0)) -> Path:
        writer = RecordingWriter(task, registry)
        writers.append(writer)

        def describe(rel: Relation) -> TableSchema:
            schema = catalog.schema_from_relation(conn, rel, types)
            writer.register_table(schema)
            return schema

        selected = {TABLE, FULL}
        builder = ChangeBuilder(task.topic_prefix, "db", selected, describe, handed_out)
        path = native_stream.NativeStream(writer, incremental) if fast else None
        return Path(builder, writer, path)

    stream = ReplicationStream(connect(task.source.url, replication=True))
    stream.create_slot(task.slot_name, export_snapshot=False)
    stream.start(task.slot_name, publication)
    try:
        yield Env(task, conn, stream, make_path, incremental)
    finally:
        stream.stop()
        stream.conn.close()
        for writer in writers:
            writer.close()
        registry.close()
        conn.close()


def frames_until_commit(env: Env, xid: int) -> list[tuple[bytes, int]]:
    """(payload, wal_start) of every XLogData up to the commit of transaction `xid`."""
    out: list[tuple[bytes, int]] = []
    current = None
    while True:
        frame = env.stream.read(timeout=10)
        assert frame is not None, "no replication frame within 10 s"
        if isinstance(frame, Keepalive):
            if frame.reply_requested:
                env.stream.send_status(0)
            continue
        assert isinstance(frame, XLogData)
        out.append((frame.payload, frame.wal_start))
        msg = decode_message(frame.payload)
        if isinstance(msg, Begin):
            current = msg.xid
        elif isinstance(msg, Commit) and current == xid:
            env.stream.send_status(msg.end_lsn)
            return out


def native_expected(msg: PgOutputMessage, builder: ChangeBuilder) -> bool:
    """Whether the fast path must take `msg`: every value drawn here is one it writes."""
    if isinstance(msg, Insert) or (isinstance(msg, Update) and msg.old is None):
        oid, values = msg.relation_oid, msg.new
    elif isinstance(msg, Delete) and msg.old_is_key_only:
        oid, values = msg.relation_oid, msg.old
    else:
        return False
    return oid in builder.relations and UNCHANGED not in values


def copy_rows(conn: psycopg.Connection[Any], table: str, rows: list[list[Any]]) -> None:
    names = sql.SQL(", ").join(sql.Identifier(c) for c in NAMES)
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), names)
    with conn.cursor().copy(query) as copy:
        for row in rows:
            copy.write_row(row)


def run_transactions(env: Env, rows: list[list[Any]], updates: list[list[Any]]) -> int:
    """Insert `rows`, update them with `updates` (all but the key and `note`), change one
    key, touch the REPLICA IDENTITY FULL table, delete everything; the last xid."""
    conn = env.conn
    with conn.transaction():
        copy_rows(conn, "native_stream", rows)
    with conn.transaction():
        conn.execute("TRUNCATE stage")
        copy_rows(conn, "stage", updates)
        changed = [c for c in NAMES if c not in ("id", "k", "note")]
        conn.execute(
            sql.SQL(
                "UPDATE native_stream t SET ({}) = ({}) FROM stage s "
                "WHERE t.id = s.id AND t.k = s.k"
            ).format(
                sql.SQL(", ").join(sql.Identifier(c) for c in changed),
                sql.SQL(", ").join(sql.Identifier("s", c) for c in changed),
            )
        )
        conn.execute("UPDATE native_stream SET id = id + 1000 WHERE id = 0")  # a key change
    with conn.transaction():
        conn.execute("INSERT INTO full_rows VALUES (1, 'a'), (2, 'b')")
        conn.execute("UPDATE full_rows SET note = 'c' WHERE id = 1")
        conn.execute("DELETE FROM full_rows")
        conn.execute("DELETE FROM native_stream")
        row = conn.execute("SELECT txid_current() % 4294967296").fetchone()
    assert row is not None
    return int(row[0])


notes = nullable(
    # Long enough to be stored out of line (STORAGE EXTERNAL: not compressed either).
    st.one_of(texts, st.integers(0, 2**32).map(lambda n: random.Random(n).randbytes(1600).hex()))
)


def draw_rows(data: st.DataObject, count: int) -> list[list[Any]]:
    keys = data.draw(st.lists(texts, min_size=count, max_size=count))
    out = []
    for n, key in enumerate(keys):
        values = data.draw(row_values)
        out.append([n, key, *(values[c] for c in NAMES[2:-1]), data.draw(notes)])
    return out


@settings(
    max_examples=int(os.environ.get("HEADWATER_NATIVE_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fast_path_writes_what_the_python_path_writes(env: Env, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 8))
    rows = draw_rows(data, count)
    updates = [
        [row[0], row[1], *new[2:]] for row, new in zip(rows, draw_rows(data, count), strict=True)
    ]
    xid = run_transactions(env, rows, updates)
    # One builder each for the whole session: pgoutput sends a Relation message once.
    if not env.paths:
        env.paths += [env.make_path(True, (0, 0)), env.make_path(False, (0, 0))]
    fast, python = env.paths
    taken = len(fast.taken)
    for payload, lsn in frames_until_commit(env, xid):
        before = (len(fast.writer.sent), len(python.writer.sent))
        expected = native_expected(decode_message(payload), python.builder)
        fast.take(payload, lsn)
        python.take(payload, lsn)
        assert fast.taken[-1] == expected, decode_message(payload)
        assert fast.writer.sent[before[0] :] == python.writer.sent[before[1] :]
        assert fast.builder.handed_out == python.builder.handed_out
    assert fast.writer.produced == python.writer.produced
    # At least the inserts and deletes (an update leaving a TOASTed note is Python's).
    assert sum(fast.taken[taken:]) >= 2 * count


def test_reconnect_skip_counts_fast_path_events(env: Env) -> None:
    rows = [[n, f"k{n}", *[None] * (len(NAMES) - 2)] for n in range(5)]
    with env.conn.transaction():
        copy_rows(env.conn, "native_stream", rows)
        row = env.conn.execute("SELECT txid_current() % 4294967296").fetchone()
    assert row is not None
    frames = frames_until_commit(env, int(row[0]))
    # A first connection wrote the Begin's transaction's first three inserts, natively.
    first = env.make_path(True, (0, 0))
    for payload, lsn in frames[:5]:  # Begin, Relation, three inserts
        first.take(payload, lsn)
    assert sum(first.taken) == 3
    handed_out = first.builder.handed_out
    assert handed_out[1] == 3
    # After a reconnect the server sends the transaction again: the first three are skipped
    # (through Python), the rest go natively; both ways write the same.
    fast, python = env.make_path(True, handed_out), env.make_path(False, handed_out)
    for payload, lsn in frames:
        fast.take(payload, lsn)
        python.take(payload, lsn)
    assert fast.writer.sent == python.writer.sent
    assert len(fast.writer.sent) == 2 and sum(fast.taken) == 2
    assert fast.builder.handed_out == python.builder.handed_out


def test_open_snapshot_window_leaves_the_table_to_python(env: Env) -> None:
    rows = [[n, f"k{n}", *[None] * (len(NAMES) - 2)] for n in range(3)]
    with env.conn.transaction():
        copy_rows(env.conn, "native_stream", rows)
        row = env.conn.execute("SELECT txid_current() % 4294967296").fetchone()
    assert row is not None
    frames = frames_until_commit(env, int(row[0]))
    fast = env.make_path(True, (0, 0))
    for payload, lsn in frames[:2]:  # Begin, then the Relation message
        fast.take(payload, lsn)
    (schema,) = [s for s in fast.builder.relations.values() if s.table == TABLE]
    chunk_rows: dict[Any, Any] = {(n, f"k{n}"): {} for n in range(4)}
    env.incremental.chunk = Chunk(schema, "c1", chunk_rows, [], window_open=True)
    for payload, lsn in frames[2:]:
        fast.take(payload, lsn)
    assert not any(fast.taken)
    assert list(chunk_rows) == [(3, "k3")]  # the streamed keys left the chunk
    env.incremental.chunk = None
