"""The PostgreSQL sink against real Kafka, a real schema registry and a real PostgreSQL: change
events produced as a headwater producer writes them (Avro envelope, tombstones, truncates on
every partition) end up in the target exactly, and a restarted sink resumes from the offsets
stored in the target, neither losing nor repeating an event."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from consumers.lag import sink_lag
from consumers.offsets import load_offsets
from consumers.sink import consumer_config, run_sink
from headwater.config import TaskConfig
from schemas.envelope import ChangeEvent, SourceInfo
from schemas.tables import Column
from tests.sink_support import (
    ChangeFeed,
    as_stored,
    assert_offsets_stored_at_log_end,
    feed,
    items_after_every_kind_of_change,
    read_dead_letters,
    row,
    send_every_kind_of_change,
    send_first_rows,
    sink_thread,
    start_sink,
    table_schema,
    target_rows,
    wait_caught_up,
)

pytestmark = pytest.mark.integration
__all__ = ["feed"]


@pytest.fixture
def task(make_task: Callable[..., TaskConfig]) -> TaskConfig:
    return make_task(target={"batch_size": 500, "batch_wait_s": 0.2})


def test_sink_applies_every_kind_of_change(task: TaskConfig, feed: ChangeFeed) -> None:
    items, lines = table_schema("items"), table_schema("lines")
    send_first_rows(feed, items, lines)
    stop = threading.Event()
    thread = threading.Thread(target=run_sink, args=(task, stop), daemon=True)
    thread.start()
    try:
        wait_caught_up(task, topics=2)
        assert len(target_rows(task, items.table)) == 6

        send_every_kind_of_change(feed, items, lines)
        feed.send(lines, "u", after=row(3, 1, note=None), unavailable=("note",))
        feed.flush()
        lags = wait_caught_up(task, topics=2)
    finally:
        stop.set()
        thread.join(30)

    expected_items = items_after_every_kind_of_change()
    assert target_rows(task, items.table) == [as_stored(r, items) for r in expected_items]
    assert target_rows(task, lines.table) == [as_stored(row(3, 1, note=row(3)["note"]), lines)]
    assert_offsets_stored_at_log_end(task, lags)


def test_new_column_is_added_to_the_target(task: TaskConfig, feed: ChangeFeed) -> None:
    v1 = table_schema("evolving")
    v2 = table_schema("evolving", Column("color", "varchar", "character varying(10)"))
    feed.register(v1)
    feed.send(v1, "c", after=row(1))
    feed.flush()
    sink = start_sink(task)
    try:
        wait_caught_up(task, topics=1)
        feed.register(v2)
        feed.send(v2, "c", after=row(2, color="red"))
        feed.send(v2, "u", after=row(1, 1, color="blue"))
        feed.flush()
        wait_caught_up(task, topics=1)
    finally:
        sink.halt()
    assert target_rows(task, v2.table) == [
        as_stored(row(1, 1, color="blue"), v2),
        as_stored(row(2, color="red"), v2),
    ]


def test_a_source_type_unknown_to_the_target_becomes_text(
    task: TaskConfig, feed: ChangeFeed
) -> None:
    moods = table_schema("moods", Column("mood", "mood", "public.mood", nullable=False))
    feed.register(moods)
    feed.send(moods, "c", after=row(1, mood="happy"))
    feed.flush()
    sink = start_sink(task)
    try:
        wait_caught_up(task, topics=1)
    finally:
        sink.halt()
    assert target_rows(task, moods.table) == [as_stored(row(1, mood="happy"), moods)]
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT data_type, is_nullable FROM information_schema.columns"
            " WHERE table_name = 'moods' AND column_name = 'mood'"
        ).fetchone()
    assert found == ("text", "NO")


def _kafka_committed(task: TaskConfig, topic: str) -> int:
    consumer = Consumer({**consumer_config(task)})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def test_restarted_sink_resumes_from_the_target(task: TaskConfig, feed: ChangeFeed) -> None:
    orders = table_schema("orders")
    feed.register(orders)
    topic = feed.topic(orders)
    count = 5000
    for key in range(count):
        feed.send(orders, "r", after=row(key))
    feed.flush()

    first = start_sink(task)
    started = time.monotonic()
    wait_caught_up(task, topics=1)
    elapsed = time.monotonic() - started
    first.halt()
    assert first.loop.events_applied == count
    print(
        f"\nsink applied {count} snapshot rows in {elapsed:.2f}s "
        f"({count / elapsed:,.0f} rows/s, including lag polling)"
    )

    # While the sink is down: an insert the target is then told (through its offsets table)
    # is already applied, so a sink resuming from Kafka's committed offset would apply it;
    # then updates, deletes (each with its tombstone) and another insert.
    stored_before = load_offsets(task)[(topic, 0)].next_offset
    assert _kafka_committed(task, topic) <= stored_before
    feed.send(orders, "c", after=row(100_000))
    feed.flush()
    _store_offset(task, topic, stored_before + 1)
    for key in range(0, count, 2):
        feed.send(orders, "u", after=row(key, 1))
    for key in range(1, count, 10):
        feed.send(orders, "d", before=row(key))
    feed.send(orders, "c", after=row(100_001))
    feed.flush()

    second = start_sink(task)
    wait_caught_up(task, topics=1)
    second.halt()

    expected = {k: row(k, 1 if k % 2 == 0 else 0) for k in range(count) if k % 10 != 1}
    expected[100_001] = row(100_001)
    assert target_rows(task, orders.table) == [
        as_stored(expected[k], orders) for k in sorted(expected)
    ]
    assert second.loop.events_applied == count // 2 + count // 10 + 1
    deletes = count // 10
    assert load_offsets(task)[(topic, 0)].next_offset == (
        stored_before + 1 + count // 2 + 2 * deletes + 1
    )


def _store_offset(task: TaskConfig, topic: str, next_offset: int) -> None:
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE public.headwater_offsets SET next_offset = %s WHERE task = %s AND topic = %s",
            (next_offset, task.name, topic),
        )


def _backends(task: TaskConfig, action: str) -> int:
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT {action}(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"headwater-{task.name}",),
        ).fetchall()
    return len(rows)


def test_sink_survives_losing_its_target_connection_and_finds_new_topics(
    task: TaskConfig, feed: ChangeFeed
) -> None:
    first, later = table_schema("first"), table_schema("later")
    feed.register(first)
    feed.send(first, "c", after=row(1))
    feed.flush()
    sink = start_sink(task)
    try:
        wait_caught_up(task, topics=1)
        assert _backends(task, "pg_terminate_backend") >= 1
        feed.send(first, "c", after=row(2))
        feed.register(later)  # a table that appears while the sink runs
        feed.send(later, "c", after=row(3))
        feed.flush()
        wait_caught_up(task, topics=2)
    finally:
        sink.halt()
    assert target_rows(task, first.table) == [as_stored(row(1), first), as_stored(row(2), first)]
    assert target_rows(task, later.table) == [as_stored(row(3), later)]


def test_terminal_error_stops_the_sink_with_the_table_and_position(
    make_task: Callable[..., TaskConfig],
) -> None:
    from consumers.errors import SinkError

    task = make_task(target={"on_error": "stop"})
    feed = ChangeFeed(task)
    bad = table_schema("bad")
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE public.bad (id integer PRIMARY KEY, name integer)")
    feed.register(bad)
    feed.send(bad, "c", after=row(1))
    feed.flush()
    thread, stop, failure = sink_thread(task)
    thread.join(60)
    stop.set()
    assert not thread.is_alive()
    [error] = failure
    assert isinstance(error, SinkError)
    assert "public.bad" in str(error)
    assert f"{feed.topic(bad)}[0]@0..0" in str(error)
    assert load_offsets(task) == {}
    feed.serde.registry.close()


def test_refused_records_go_to_the_dead_letter_topic(task: TaskConfig, feed: ChangeFeed) -> None:
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE public.checked (id integer PRIMARY KEY, name text CHECK (name <> 'bad'),"
            " price numeric(12,2), note text, created timestamptz, payload jsonb, uid uuid,"
            " data bytea, day date, at time)"
        )
    checked = table_schema("checked")
    feed.register(checked)
    poison = {5, 77, 78}
    for key in range(1, 201):
        feed.send(checked, "c", after=row(key, name="bad") if key in poison else row(key))
    feed.flush()
    sink = start_sink(task)
    try:
        wait_caught_up(task, topics=1)
    finally:
        sink.halt()
    ids = [r[0] for r in target_rows(task, checked.table)]
    assert ids == [k for k in range(1, 201) if k not in poison]
    letters = read_dead_letters(task, len(poison))
    offsets = sorted(int(dict(m.headers())["headwater.offset"]) for m in letters)
    assert offsets == sorted(k - 1 for k in poison)
    assert all(b"check" in dict(m.headers())["headwater.error"] for m in letters)


def test_two_sinks_in_one_group_share_the_partitions(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task(target={"batch_size": 200, "batch_wait_s": 0.1}, kafka={"partitions": 3})
    feed = ChangeFeed(task, partitions=3)
    accounts = table_schema("accounts")
    feed.register(accounts)
    sinks = [start_sink(task)]
    try:
        for key in range(3000):
            feed.send(accounts, "c", after=row(key))
            if key == 1000:
                sinks.append(start_sink(task))  # joins while the first one applies
        for key in range(0, 3000, 3):
            feed.send(accounts, "u", after=row(key, 2))
        for key in range(1, 3000, 3):
            feed.send(accounts, "d", before={"id": key})
        feed.flush()
        lags = wait_caught_up(task, topics=1)
    finally:
        for sink in sinks:
            sink.halt()
        feed.serde.registry.close()
    assert len(lags) == 3
    expected = [row(k, 2 if k % 3 == 0 else 0) for k in range(3000) if k % 3 != 1]
    assert target_rows(task, accounts.table) == [as_stored(r, accounts) for r in expected]
    assert sum(s.loop.events_applied for s in sinks) >= 5000


def test_a_sink_whose_offsets_moved_applies_nothing(task: TaskConfig) -> None:
    from consumers.batch import SinkRecord, collapse
    from consumers.errors import PositionConflict
    from consumers.postgres_sink import PostgresSink

    table = table_schema("fenced")
    source = SourceInfo("postgresql", "test", "db", table.table, 1)
    insert = ChangeEvent("c", source, None, row(1), 1)
    target = PostgresSink(task)
    try:
        target.apply(collapse([SinkRecord("x.public.fenced", 0, 0, table, insert)]), {})
        again = collapse(
            [SinkRecord("x.public.fenced", 0, 1, table, ChangeEvent("c", source, None, row(2), 1))]
        )
        with pytest.raises(PositionConflict):
            target.apply(again, {})  # believes nothing was stored; the target says 1
        target.apply(again, {("x.public.fenced", 0): 1})
    finally:
        target.close()
    assert target_rows(task, table.table) == [as_stored(row(1), table), as_stored(row(2), table)]


def test_forgotten_offsets_make_the_next_sink_start_over(
    task: TaskConfig, feed: ChangeFeed
) -> None:
    from consumers.offsets import forget_offsets

    table = table_schema("again")
    feed.register(table)
    feed.send(table, "c", after=row(1))
    feed.flush()
    sink = start_sink(task)
    wait_caught_up(task, topics=1)
    sink.halt()
    assert forget_offsets(task) == 1
    assert load_offsets(task) == {}
    assert sink_lag(task)[0].lag == 1
    sink = start_sink(task)
    wait_caught_up(task, topics=1)
    sink.halt()
    assert sink.loop.events_applied == 1
    assert target_rows(task, table.table) == [as_stored(row(1), table)]
