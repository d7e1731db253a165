"""Skipping, after a producer crash, what Kafka already holds: murmur2 as Kafka computes it,
streamed changes' positions, the search of a partition's tail, and a model of a crash
(each partition keeps a prefix of what was sent) replayed from the slot's confirmed
position: every change ends in Kafka exactly once, in order."""

from __future__ import annotations

import random

from headwater.config import parse_task
from producers.event_writer import producer_config
from producers.mysql.changes import RowsContext, row_events
from producers.mysql.position import stream_position as mysql_stream_position
from producers.postgres.changes import ChangeBuilder
from producers.postgres.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    RelationColumn,
    Truncate,
    Update,
)
from producers.resume_dedupe import (
    HighWater,
    Position,
    ResumeFilter,
    TailRecord,
    key_partition,
    murmur2,
    postgres_position,
    tail_verdict,
    unsafe_for_resume,
)
from schemas.envelope import SourceInfo
from schemas.tables import Column, TableId, TableSchema

T = TableId("public", "t")


def _signed(h: int) -> int:
    return h - (1 << 32) if h >= 1 << 31 else h


def test_murmur2_matches_kafkas_test_vectors() -> None:
    # From Kafka's UtilsTest.testMurmur2 (Java ints).
    vectors = {
        "21": -973932308,
        "foobar": -790332482,
        "a-little-bit-long-string": -985981536,
        "a-little-bit-longer-string": -1486304829,
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        "abc": 479470107,
    }
    for text, expected in vectors.items():
        assert _signed(murmur2(text.encode())) == expected, text
    assert key_partition(b"abc", 3) == (479470107 & 0x7FFFFFFF) % 3


def _source(
    commit_lsn: int | None, lsn: int | None = 10, seq: int = 0, snapshot: str = "false"
) -> SourceInfo:
    return SourceInfo(
        "postgresql", "p", "db", T, 0, snapshot, lsn=lsn, commit_lsn=commit_lsn, seq=seq
    )


def test_position_orders_by_commit_then_lsn_then_seq() -> None:
    assert postgres_position(_source(None)) is None
    assert postgres_position(_source(None, None, snapshot="true")) is None
    a = postgres_position(_source(100, 50, 0))
    b = postgres_position(_source(100, 50, 1))
    c = postgres_position(_source(100, 60, 0))
    d = postgres_position(_source(200, 10, 0))  # a later commit, an earlier change LSN
    assert a is not None and b is not None and c is not None and d is not None
    assert a < b < c < d


# --- the builder gives every streamed event its position ---------------------------------

SCHEMA = TableSchema(
    T, (Column("id", "int8", "bigint", False), Column("v", "text", "text")), ("id",)
)
REL = Relation(
    1, "public", "t", "d", (RelationColumn("id", 20, -1, True), RelationColumn("v", 25, -1, False))
)


def test_builder_positions_streamed_events() -> None:
    b = ChangeBuilder("p", "db", {T}, lambda rel: SCHEMA)
    b.on_message(REL, 0)
    b.on_message(Begin(900, 0, 7), 100)
    ins = b.on_message(Insert(1, ("1", "a")), 110)
    moved = b.on_message(Update(1, ("1", None), True, ("2", "a")), 120)  # a key change
    gone = b.on_message(Delete(1, ("2", None), True), 130)
    cut = b.on_message(Truncate((1,), False, False), 140)
    b.on_message(Commit(900, 950, 0), 950)
    events = ins + moved + gone + cut
    assert [e.op for e in events] == ["c", "d", "c", "d", "t"]
    positions = [postgres_position(e.source) for e in events]
    assert positions == [(900, 110, 0), (900, 120, 0), (900, 120, 1), (900, 130, 0), (900, 140, 0)]
    assert positions == sorted(positions)  # type: ignore[type-var]


def test_the_writers_kafka_settings_keep_partitions_gap_free_and_murmur2() -> None:
    assert unsafe_for_resume(producer_config(parse_task({"name": "x"}))) is None
    for override in (
        {"partitioner": "consistent_random"},
        {"message.timeout.ms": 300000},
        {"enable.gapless.guarantee": False},
    ):
        task = parse_task({"name": "x", "kafka": {"producer": override}})
        assert unsafe_for_resume(producer_config(task)) is not None, override


# --- the search of a partition's tail -----------------------------------------------------

TOMB = TailRecord(None)


def _change(op: str, commit_lsn: int, lsn: int = 1, seq: int = 0) -> TailRecord:
    return TailRecord(op, _source(commit_lsn, lsn, seq))


def test_tail_verdict_takes_the_newest_streamed_change() -> None:
    records = [TOMB, _change("d", 30), _change("c", 20)]
    verdict = tail_verdict(records, postgres_position)
    assert verdict.decided and verdict.high_water == HighWater((30, 1, 0), False)


def test_tail_verdict_notes_a_delete_whose_tombstone_was_lost() -> None:
    verdict = tail_verdict([_change("d", 30), _change("c", 20)], postgres_position)
    assert verdict.high_water == HighWater((30, 1, 0), True)


def test_tail_verdict_passes_over_incremental_rows_and_carries_the_tombstone() -> None:
    incremental = TailRecord("r", _source(None, 77, snapshot="incremental"))
    first = tail_verdict([incremental, TOMB], postgres_position)
    assert not first.decided and first.later_is_tombstone
    second = tail_verdict([_change("d", 5)], postgres_position, first.later_is_tombstone)
    assert second.high_water == HighWater((5, 1, 0), False)
    # A change left without a position on purpose (new format) is passed over too.
    unplaced = TailRecord("t", _source(None))
    assert tail_verdict([unplaced, _change("u", 4)], postgres_position).high_water == HighWater(
        (4, 1, 0)
    )


def test_tail_verdict_stops_with_nothing_at_full_load_rows_and_old_records() -> None:
    full_load = TailRecord("r", _source(None, None, snapshot="true"))
    assert tail_verdict([full_load, _change("c", 9)], postgres_position).high_water is None
    old = TailRecord("u", _source(None), old_format=True)
    verdict = tail_verdict([old, _change("c", 9)], postgres_position)
    assert verdict.decided and verdict.high_water is None and verdict.unpositioned
    foreign = TailRecord("?")
    assert tail_verdict([foreign], postgres_position).unpositioned
    assert not tail_verdict([TOMB], postgres_position).decided


# --- the filter's decisions ---------------------------------------------------------------


def test_route_skips_at_or_below_the_partitions_high_water_only() -> None:
    key = b"\x00\x00\x00\x00\x05\x02"
    p = key_partition(key, 3)
    other = (p + 1) % 3
    resume = ResumeFilter(
        {("x", p): HighWater((10, 5, 0)), ("x", other): HighWater((20, 1, 0))},
        {"x": 3},
        postgres_position,
    )
    assert resume.ceiling == (20, 1, 0)
    assert resume.route("x", key, "c", (10, 5, 0)).write_event is False
    assert resume.route("x", key, "c", (10, 5, 1)).write_event is True  # a key change's insert
    # Later than this partition's high-water though below another's: written.
    route = resume.route("x", key, "d", (15, 1, 0))
    assert (route.partition, route.write_event, route.write_tombstone) == (p, True, True)
    assert not resume.passed((20, 1, 0)) and resume.passed((20, 1, 1))
    assert resume.truncate_partitions("x", (12, 1, 0), 3) == sorted({p, 3 - p - other})


def test_high_waters_beyond_the_sources_wal_are_forgotten() -> None:
    resume = ResumeFilter(
        {("x", 0): HighWater((10, 5, 0)), ("y", 1): HighWater((99, 1, 0))},
        {"x": 2, "y": 2},
        postgres_position,
    )
    assert resume.forget_beyond(50) == [("y", 1)]
    assert resume.topics == {"x"} and resume.ceiling == (10, 5, 0)
    assert resume.forget_beyond(5) == [("x", 0)] and resume.ceiling is None


def test_route_writes_only_a_lost_tombstone() -> None:
    key = b"k"
    p = key_partition(key, 2)
    resume = ResumeFilter({("x", p): HighWater((10, 5, 0), True)}, {"x": 2}, postgres_position)
    route = resume.route("x", key, "d", (10, 5, 0))
    assert (route.write_event, route.write_tombstone) == (False, True)
    route = resume.route("x", key, "d", (10, 4, 0))
    assert (route.write_event, route.write_tombstone) == (False, False)


# --- a model of a crash and restart ---------------------------------------------------------

Record = tuple[bytes, Position | None]  # key, position (None: tombstone)


def _stream(rng: random.Random, txs: int) -> list[tuple[str, bytes, Position]]:
    """Transactions of changes (topic, key, position): inserts, deletes, key changes."""
    events: list[tuple[str, bytes, Position]] = []
    lsn = 1000
    for tx in range(txs):
        commit = lsn + 500
        for _ in range(rng.randint(1, 6)):
            lsn += rng.randint(1, 9)
            topic = rng.choice(["a", "b"])
            if rng.random() < 0.2:  # a key change: a delete and an insert at one LSN
                events.append((topic, bytes([rng.randint(0, 40)]) + b"d", (commit, lsn, 0)))
                events.append((topic, bytes([rng.randint(0, 40)]) + b"c", (commit, lsn, 1)))
            else:
                op = rng.choice("cud")
                events.append(
                    (topic, bytes([rng.randint(0, 40), tx % 7]) + op.encode(), (commit, lsn, 0))
                )
        lsn = commit + 1
    return events


def _write(
    kafka: dict[tuple[str, int], list[Record]],
    topic: str,
    p: int,
    key: bytes,
    pos: Position,
    tombstone: bool,
    event: bool,
) -> None:
    if event:
        kafka.setdefault((topic, p), []).append((key, pos))
    if tombstone:
        kafka.setdefault((topic, p), []).append((key, None))


def _high_waters(kafka: dict[tuple[str, int], list[Record]]) -> dict[tuple[str, int], HighWater]:
    found = {}
    for tp, records in kafka.items():
        newest_first = [
            TailRecord(None)
            if pos is None
            else TailRecord(key[-1:].decode(), _source(pos[0], pos[1], pos[2]))
            for key, pos in reversed(records)
        ]
        verdict = tail_verdict(newest_first, postgres_position)
        if verdict.high_water is not None:
            found[tp] = verdict.high_water
    return found


def test_a_crash_replayed_from_the_confirmed_position_writes_every_change_once() -> None:
    partitions = 3
    for seed in range(300):
        rng = random.Random(seed)
        events = _stream(rng, rng.randint(1, 12))
        sent: dict[tuple[str, int], list[Record]] = {}
        for topic, key, pos in events:
            p = key_partition(key, partitions)
            _write(sent, topic, p, key, pos, key.endswith(b"d"), True)
        # The slot confirmed a transaction boundary: everything up to it is in Kafka. The
        # crash: each partition keeps a prefix of what was sent to it, at least that.
        confirmed = rng.choice([0, *sorted({pos[0] for _, _, pos in events})])
        kafka = {}
        for tp, records in sent.items():
            least = max(
                (i + 1 for i, (_, pos) in enumerate(records) if pos is None or pos[0] <= confirmed),
                default=0,
            )
            least = _past_tombstone(records, least, confirmed)
            kafka[tp] = records[: rng.randint(least, len(records))]
        resume = ResumeFilter(
            _high_waters(kafka), {"a": partitions, "b": partitions}, postgres_position
        )
        for topic, key, pos in events:
            if pos[0] <= confirmed:
                continue  # not sent again
            route = resume.route(topic, key, key[-1:].decode(), pos)
            _write(
                kafka, topic, route.partition, key, pos, route.write_tombstone, route.write_event
            )
        assert {tp: r for tp, r in kafka.items() if r} == sent, seed


def _past_tombstone(records: list[Record], least: int, confirmed: int) -> int:
    """The shortest prefix holding every record up to `confirmed`; a tombstone counts with
    its delete (a tombstone of a later delete does not)."""
    while least > 0:
        _, pos = records[least - 1]
        if pos is not None and pos[0] <= confirmed:
            break
        if pos is None and least >= 2 and (records[least - 2][1] or (0,))[0] <= confirmed:
            break
        least -= 1
    return least


# --- MySQL/MariaDB: binlog file, event end position, seq within the event ------------------


def test_mysql_rows_events_position_each_row_and_key_change_half() -> None:
    items = TableId("shop", "items")
    schema = TableSchema(
        items, (Column("id", "int", "int", False), Column("v", "varchar", "varchar(20)")), ("id",)
    )
    ctx = RowsContext("p", "mariadb-bin.000012", 4000, "0-1-9", 1, 0)
    rows = [
        {"before_values": {"id": 1, "v": "a"}, "after_values": {"id": 1, "v": "b"}},
        {"before_values": {"id": 2, "v": "a"}, "after_values": {"id": 7, "v": "a"}},
        {"before_values": {"id": 3, "v": "a"}, "after_values": {"id": 3, "v": "c"}},
    ]
    events = row_events("u", schema, rows, ctx)
    assert [e.op for e in events] == ["u", "d", "c", "u"]
    positions = [mysql_stream_position(e.source) for e in events]
    assert positions == [(12, 4000, 0), (12, 4000, 2), (12, 4000, 3), (12, 4000, 4)]
    later_file = RowsContext("p", "mariadb-bin.000013", 300, None, 1, 0)
    (insert,) = row_events("c", schema, [{"values": {"id": 9, "v": "z"}}], later_file)
    assert mysql_stream_position(insert.source) == (13, 300, 0)  # the next file sorts after
    # Snapshot rows and PostgreSQL events have no binlog position.
    assert mysql_stream_position(_source(5)) is None
