"""The MySQL/MariaDB and SQLite sinks against real Kafka, a real registry, a real MariaDB
(a database of its own per test) and a SQLite file: every kind of change lands as documented
in docs/type-mapping.md; a record the target refuses goes to the dead-letter topic with its
reason while the rest applies; `create_tables: false` and a changed column type stop only
their table; `on_error: stop` stops the sink naming the position."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from consumers.errors import SinkError
from consumers.lag import dead_letter_count
from consumers.offsets import load_offsets
from consumers.sql_offsets import sql_dialect
from consumers.stopped_tables import load_stopped
from headwater.config import TaskConfig
from schemas.tables import Column, TableSchema
from tests.sink_support import (
    ChangeFeed,
    assert_offsets_stored_at_log_end,
    feed,
    items_after_every_kind_of_change,
    mariadb_database,
    read_dead_letters,
    row,
    send_every_kind_of_change,
    send_first_rows,
    sink_thread,
    start_sink,
    table_schema,
    wait_caught_up,
    wait_for,
)

pytestmark = pytest.mark.integration
__all__ = ["feed"]


@pytest.fixture(params=["mysql", "sqlite"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(engine, url) of a fresh target of each kind."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'target.db'}"
    else:
        root = request.getfixturevalue("mariadb_root")
        for url in mariadb_database(root):
            yield "mysql", url


@pytest.fixture
def build_task(
    make_task: Callable[..., TaskConfig], target_url: tuple[str, str]
) -> Callable[..., TaskConfig]:
    engine, url = target_url

    def build(**target: Any) -> TaskConfig:
        return make_task(
            target={"engine": engine, "url": url, "batch_size": 500, "batch_wait_s": 0.2, **target}
        )

    return build


@pytest.fixture
def task(build_task: Callable[..., TaskConfig]) -> TaskConfig:
    return build_task()


def run_target_sql(task: TaskConfig, statement: str) -> None:
    engine = sql_dialect(task).engine(task)
    try:
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def target_rows(task: TaskConfig, name: str) -> list[tuple[Any, ...]]:
    engine = sql_dialect(task).engine(task)
    try:
        with engine.connect() as conn, conn.begin():
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            query = sa.select(table).order_by(*table.primary_key.columns)
            return [tuple(r) for r in conn.execute(query)]
    finally:
        engine.dispose()


def as_stored(values: dict[str, Any], schema: TableSchema, engine: str) -> tuple[Any, ...]:
    """A row as the driver reads it back, after the documented conversion."""
    out: list[Any] = []
    for col in schema.columns:
        value = values.get(col.name)
        if value is None:
            out.append(None)
            continue
        if col.type_name == "timestamptz":
            value = value.astimezone(UTC).replace(tzinfo=None)
            if engine == "sqlite":
                value = value.isoformat(sep=" ", timespec="microseconds")
        elif col.type_name == "time" and engine == "sqlite":
            value = value.isoformat()
        elif engine == "sqlite" and col.type_name in ("numeric", "date"):
            value = str(value) if col.type_name == "numeric" else value.isoformat()
        out.append(value)
    return tuple(out)


def test_every_kind_of_change(task: TaskConfig, feed: ChangeFeed) -> None:
    engine = task.target.engine
    items, lines = table_schema("items"), table_schema("lines")
    send_first_rows(feed, items, lines)
    sink = start_sink(task)
    try:
        wait_caught_up(task, topics=2)
        assert len(target_rows(task, "items")) == 6
        send_every_kind_of_change(feed, items, lines)
        feed.flush()
        lags = wait_caught_up(task, topics=2)
    finally:
        sink.halt()
    expected = items_after_every_kind_of_change()
    got, want = target_rows(task, "items"), [as_stored(r, items, engine) for r in expected]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert [(c.name, a) for c, a, b in zip(items.columns, g, w, strict=True) if a != b] == []
        assert g == w
    assert target_rows(task, "lines") == [as_stored(row(3), lines, engine)]
    assert_offsets_stored_at_log_end(task, lags)


def test_new_column_is_added(task: TaskConfig, feed: ChangeFeed) -> None:
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
        feed.flush()
        wait_caught_up(task, topics=1)
    finally:
        sink.halt()
    rows = target_rows(task, "evolving")
    assert [r[-1] for r in rows] == [None, "red"]


def _poison_table(task: TaskConfig) -> None:
    # The target holds names of at most 12 characters: "item 3 v0 long..." does not fit.
    if task.target.engine == "mysql":
        column = "name VARCHAR(12) NOT NULL"
    else:
        column = "name TEXT NOT NULL CHECK (length(name) <= 12)"
    run_target_sql(
        task,
        f"CREATE TABLE items (id INTEGER PRIMARY KEY, {column}, price DECIMAL(12,2), "
        "note TEXT, created TEXT, payload TEXT, uid TEXT, data BLOB, day TEXT, at TEXT)",
    )


def test_poison_record_goes_to_the_dead_letter_topic(task: TaskConfig, feed: ChangeFeed) -> None:
    _poison_table(task)
    items = table_schema("items")
    feed.register(items)
    for key in range(1, 41):
        long_name: dict[str, Any] = (
            {"name": "a name far too long for the target"} if key == 23 else {}
        )
        feed.send(items, "c", after=row(key, **long_name))
    feed.flush()
    sink = start_sink(task)
    try:
        wait_caught_up(task, topics=1)
    finally:
        sink.halt()
    assert [r[0] for r in target_rows(task, "items")] == [k for k in range(1, 41) if k != 23]
    [letter] = read_dead_letters(task, 1)
    headers = {k: v.decode() for k, v in letter.headers() if k != "headwater.key"}
    # Keyed by its origin, so a copy written again after a crash dedupes by key.
    assert letter.key() == f"{feed.topic(items)}/0/22".encode()
    original_key = dict(letter.headers())["headwater.key"]
    assert feed.serde.decode(original_key)[1] == {"id": 23}
    assert headers["headwater.table"] == "public.items"
    assert headers["headwater.topic"] == feed.topic(items)
    assert headers["headwater.offset"] == "22"
    assert headers["headwater.partition"] == "0"
    assert headers["headwater.error"]
    # The original message, unchanged: any Avro reader decodes it.
    _schema_id, record = feed.serde.decode(letter.value())
    assert record["after"]["id"] == 23
    assert sink.loop.dead_letters is not None and sink.loop.dead_letters.written == 1
    assert dead_letter_count(task) == 1  # what `headwater status` shows


def test_on_error_stop_stops_the_sink_at_the_record(
    build_task: Callable[..., TaskConfig],
) -> None:
    task = build_task(on_error="stop")
    _poison_table(task)
    feed = ChangeFeed(task)
    items = table_schema("items")
    feed.register(items)
    feed.send(items, "c", after=row(1, name="a name far too long for the target"))
    feed.flush()
    thread, stop, failure = sink_thread(task)
    thread.join(60)
    stop.set()
    feed.serde.registry.close()
    assert not thread.is_alive()
    [error] = failure
    assert isinstance(error, SinkError)
    assert f"{feed.topic(items)}[0]@0..0" in str(error) and "on_error" in str(error)
    assert load_offsets(task) == {}
    # `headwater status` shows the table the sink stopped at, and why.
    [stopped] = load_stopped(task)
    assert stopped.table == "items"
    assert "cannot apply changes to items" in stopped.reason


def test_missing_table_and_changed_type_stop_only_their_table(
    build_task: Callable[..., TaskConfig],
) -> None:
    task = build_task(create_tables=False)
    run_target_sql(task, "CREATE TABLE kept (id INTEGER PRIMARY KEY, name VARCHAR(40))")
    feed = ChangeFeed(task)
    kept = TableSchema(
        table_schema("kept").table,
        (
            Column("id", "int4", "integer", nullable=False),
            Column("name", "varchar", "character varying(40)"),
        ),
        ("id",),
    )
    # MariaDB: VARCHAR(40) -> VARCHAR(8); SQLite has one TEXT for both, so its case is a
    # change of storage class.
    changed = (
        Column("name", "varchar", "character varying(8)")
        if task.target.engine == "mysql"
        else Column("name", "bytea", "bytea")
    )
    narrowed = TableSchema(kept.table, (kept.columns[0], changed), ("id",))
    missing = table_schema("missing")
    feed.register(kept)
    feed.register(missing)
    feed.send(kept, "c", after={"id": 1, "name": "one"})
    feed.send(missing, "c", after=row(1))
    feed.flush()
    sink = start_sink(task)
    try:
        wait_for(lambda: target_rows(task, "kept") == [(1, "one")])
        feed.register(narrowed)
        feed.send(
            narrowed,
            "c",
            after={"id": 2, "name": "two" if changed.type_name == "varchar" else b"2"},
        )
        feed.flush()
        wait_for(lambda: feed.topic(kept) in sink.loop.stopped_topics)
        assert feed.topic(missing) in sink.loop.stopped_topics
    finally:
        sink.halt()
    assert target_rows(task, "kept") == [(1, "one")]
    stored = load_offsets(task)
    assert stored[(feed.topic(kept), 0)].next_offset == 1  # the narrowed event not applied
    assert (feed.topic(missing), 0) not in stored
    feed.serde.registry.close()
    reasons = {t.table: t.reason for t in load_stopped(task)}  # what `status` shows
    assert set(reasons) == {"kept", "missing"}
    assert "changed type" in reasons["kept"] and "does not exist" in reasons["missing"]


@pytest.mark.parametrize(
    ("engine", "url", "fix"),
    [
        ("mysql", "mysql+pymysql://root@127.0.0.1:1/x", "server runs"),
        ("mysql", "mysql+pymysql://nobody:wrong@127.0.0.1:3306/x", "user and password"),
        ("sqlite", "sqlite:////no/such/dir/target.db", "directory"),
    ],
)
def test_preflight_names_the_fix_in_one_line(
    mariadb_root: str, engine: str, url: str, fix: str
) -> None:
    from consumers.errors import TargetError
    from headwater.preflight import check_target

    task = TaskConfig.model_validate({"name": "pf", "target": {"engine": engine, "url": url}})
    with pytest.raises(TargetError) as caught:
        check_target(task)
    message = str(caught.value)
    assert fix in message and "\n" not in message and "wrong" not in message
